"""The gettext catalogs: complete, consistent with the source, compiled, and used by the command.

Every msgid of ``meshchat/locale/meshchat.pot`` must have a translation in each language of
``LANGUAGES`` with the same ``{placeholders}`` and rich markup tags; the template must hold exactly
what the source marks today; each committed ``.mo`` must be what its ``.po`` compiles to; and
``meshchat --help`` must speak the language ``LANG`` names. A language without a catalog fails by
name here (``scripts/i18n.sh init LANG`` starts one), so what is missing shows at once.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from meshchat.i18n import LANGUAGES as SUPPORTED
from meshchat.i18n import LOCALE_DIR

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = LOCALE_DIR / "meshchat.pot"
#: The translated languages (English is the source).
LANGUAGES = ("ru", "tt", "ba")
#: A locale for each language, as a user's LANG would name it.
LOCALES = {"ru": "ru_RU.UTF-8", "tt": "tt_RU.UTF-8", "ba": "ba_RU.UTF-8"}
#: The extraction keywords scripts/i18n.sh passes to pybabel.
KEYWORDS: dict[str, tuple[int, ...] | None] = {"_": None, "N_": None, "ngettext": (1, 2)}
#: Seconds a ``meshchat --help`` may take on a loaded machine.
HELP_TIMEOUT = 60
#: rich's markup tags: ``[bold]``, ``[/]``, ``[dim]``... (a translation that breaks one breaks the line).
_MARKUP = re.compile(r"\[/?[a-z][a-z ]*\]|\[/\]")
#: msgids that are typer's bracketed markers, not rich markup (typer escapes them itself).
_NOT_MARKUP = ("[default: {}]", "[env var: {}]", "[required]")


def _catalog(path: Path) -> Catalog:
    with path.open("rb") as file:
        return read_po(file)


def _po(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "meshchat.po"


def _catalog_of(language: str) -> Catalog:
    path = _po(language)
    if not path.is_file():
        pytest.fail(f"no {language} catalog: run `scripts/i18n.sh init {language}` and translate {path}")
    return _catalog(path)


def _ids(catalog: Catalog) -> set[str | tuple[str, ...]]:
    return {message.id for message in catalog if message.id}


def _strings(message: Message) -> list[tuple[str, str]]:
    """(source, translation) pairs of a message: one, or one per plural form (against the plural)."""
    if isinstance(message.id, tuple):
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        return [(message.id[0] if n == 0 else message.id[1], form) for n, form in enumerate(forms)]
    assert isinstance(message.string, str)
    return [(message.id, message.string)]


def _fields(text: str) -> list[tuple[str, str, str]]:
    """The ``{name!conversion:spec}`` fields of a format string, sorted."""
    return sorted(
        (name, conversion or "", spec or "")
        for _, name, spec, conversion in string.Formatter().parse(text)
        if name is not None
    )


def _markup(text: str) -> list[str]:
    return sorted(_MARKUP.findall(text))


def test_languages_are_the_ones_meshchat_offers() -> None:
    assert ("en", *LANGUAGES) == SUPPORTED


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_msgid_is_translated(language: str) -> None:
    template = _ids(_catalog(TEMPLATE))
    catalog = _catalog_of(language)
    assert catalog.locale is not None and str(catalog.locale) == language
    missing = sorted(str(m) for m in template - _ids(catalog))
    assert not missing, f"{len(missing)} msgids of the template missing (run scripts/i18n.sh): {missing[:10]}"
    obsolete = sorted(str(m) for m in _ids(catalog) - template)
    assert not obsolete, f"msgids no longer in the template (run scripts/i18n.sh): {obsolete[:10]}"
    empty = [m.id for m in catalog if m.id and not all(t for _, t in _strings(m))]
    assert not empty, f"{len(empty)} untranslated: {empty[:10]}"
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not fuzzy, f"{len(fuzzy)} fuzzy (check, then drop the flag): {fuzzy[:10]}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_placeholders_and_markup(language: str) -> None:
    wrong = []
    for message in _catalog_of(language):
        if not message.id:
            continue
        for source, translation in _strings(message):
            if not translation:
                continue  # reported by test_every_msgid_is_translated
            if _fields(source) != _fields(translation):
                wrong.append(f"placeholders: {source!r} -> {translation!r}")
            if source not in _NOT_MARKUP and _markup(source) != _markup(translation):
                wrong.append(f"markup: {source!r} -> {translation!r}")
            if source.endswith("\n") != translation.endswith("\n"):
                wrong.append(f"final newline: {source!r} -> {translation!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("language", LANGUAGES)
def test_mo_file_is_compiled_from_the_po_file(language: str) -> None:
    catalog = _catalog_of(language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    mo = _po(language).with_suffix(".mo")
    assert mo.is_file(), f"{mo} missing: run scripts/i18n.sh compile"
    assert mo.read_bytes() == compiled.getvalue(), f"{mo} is stale: run scripts/i18n.sh compile"


def test_template_holds_what_the_source_marks() -> None:
    with (ROOT / "babel.cfg").open() as file:
        method_map, options_map = parse_mapping_cfg(file)
    extracted = {
        message
        for _, _, message, _, _ in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS, comment_tags=("TRANSLATORS:",)
        )
    }
    template = _ids(_catalog(TEMPLATE))
    assert not extracted - template, f"new strings: run scripts/i18n.sh ({sorted(extracted - template)[:10]})"
    assert not template - extracted, (
        f"gone strings: run scripts/i18n.sh ({sorted(template - extracted)[:10]})"
    )


def _calls_of_underscore(tree: ast.AST) -> list[tuple[ast.Call, ast.Call | None]]:
    """Each ``_(...)`` call with the ``.format(...)`` call made on its result, if any."""
    formats = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            target = node.func.value  # _("...").format() or (_("a") if c else _("b")).format()
            for formatted in (target.body, target.orelse) if isinstance(target, ast.IfExp) else (target,):
                formats[id(formatted)] = node
    return [
        (node, formats.get(id(node)))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"
    ]


def test_format_calls_name_exactly_the_placeholders() -> None:
    """``_("... {name} ...").format(name=...)``: the keywords are the msgid's placeholders (a missing
    one raises KeyError in the translated text only if the translator kept it...), never an f-string
    inside ``_()`` (extraction would take its source text, and nothing would match at run time)."""
    wrong = []
    for path in sorted([*ROOT.glob("meshchat/cli/**/*.py"), *ROOT.glob("meshchat/app/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call, format_call in _calls_of_underscore(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            [argument] = call.args
            if isinstance(argument, ast.JoinedStr):
                wrong.append(f"{where}: an f-string inside _()")
                continue
            if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
                continue  # _(VARIABLE): a string marked with N_ elsewhere
            names = {name for name, _, _ in _fields(argument.value)}
            if format_call is None:
                if names:
                    wrong.append(f"{where}: placeholders {sorted(names)} but no .format()")
                continue
            if format_call.args or any(k.arg is None for k in format_call.keywords):
                wrong.append(f"{where}: .format() with positional or ** arguments")
                continue
            keywords = {k.arg for k in format_call.keywords}
            if keywords != names:
                wrong.append(f"{where}: placeholders {sorted(names)}, .format() gives {sorted(keywords)}")
    assert not wrong, "\n".join(wrong)


def _help(locale: str) -> str:
    """``meshchat --help`` as a user with ``LANG=locale`` sees it (a wide terminal: no wrapping)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    env.update(LANG=locale, COLUMNS="250", PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "meshchat", "--help"],
        env=env,
        capture_output=True,
        timeout=HELP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("utf-8")


#: Strings of ``meshchat --help``: meshchat's own (its description, an option) and typer's (a panel
#: title, the help option, the usage line).
HELP_STRINGS = (
    "meshchat: end-to-end encrypted peer-to-peer messaging with no central operator.",
    "Print the version and exit.",
    "Show this message and exit.",
    "Commands",
    "Usage: ",
)


@pytest.mark.parametrize("language", LANGUAGES)
def test_help_speaks_the_language_lang_names(language: str) -> None:
    catalog = _catalog_of(language)
    shown = _help(LOCALES[language])
    for msgid in HELP_STRINGS:
        message = catalog.get(msgid)
        assert message is not None and message.string, f"{msgid!r} untranslated in {language}"
        assert isinstance(message.string, str)
        assert message.string != msgid
        assert message.string.strip() in shown, f"{language}: {message.string!r} not in --help"
        assert msgid.strip() not in shown, f"{language}: {msgid!r} still English in --help"


def test_help_in_the_c_locale_is_english() -> None:
    shown = _help("C")
    for msgid in HELP_STRINGS:
        assert msgid.strip() in shown


def test_russian_help_is_russian() -> None:
    shown = _help(LOCALES["ru"])
    assert "Показать это сообщение и выйти." in shown
    assert "Использование: meshchat" in shown


#: Prints, as JSON, every help text of the ``meshchat`` command tree: commands', groups' and options'.
_HELP_TEXTS_SCRIPT = """
import json, typer.main
from meshchat.cli import app
def walk(command):
    yield command.help
    for param in command.params:
        yield getattr(param, "help", None)
    for sub in getattr(command, "commands", {}).values():
        yield from walk(sub)
print(json.dumps(sorted({text for text in walk(typer.main.get_command(app)) if text})))
"""


def test_every_help_text_is_in_the_template() -> None:
    """typer takes a command's help from its docstring when the decorator gives none: such a help
    is English whatever the language. Every help text of every command and option must therefore be
    a msgid (``help=_("...")``); a new command module shows here until its helps are wrapped."""
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    env.update(LANG="C", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", _HELP_TEXTS_SCRIPT],
        env=env,
        capture_output=True,
        timeout=HELP_TIMEOUT,
        check=True,
    )
    texts = json.loads(result.stdout)
    assert len(texts) > 100
    template = _ids(_catalog(TEMPLATE))
    untranslatable = [text for text in texts if text not in template]
    assert not untranslatable, "help texts that are not msgids:\n" + "\n".join(map(repr, untranslatable))
