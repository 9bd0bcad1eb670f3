"""The CLI's and the app's own strings in the user's language: GNU gettext catalogs.

Messages people send are never translated (they are UTF-8 bytes end to end); this is only for the words
meshchat itself prints or shows. English is the source language; catalogs for Russian (``ru``), Tatar
(``tt``) and Bashkir (``ba``) live in ``meshchat/locale/<lang>/LC_MESSAGES/meshchat.po`` (and the
compiled ``.mo`` beside it). The language comes from ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES`` or
``LANG``, as gettext's own lookup does, so ``LANG=ru_RU.UTF-8 meshchat --help`` speaks Russian.

``_`` is bound once, when this module is imported: typer evaluates command help texts at import time,
so the translation has to exist before the CLI modules load. A program that wants another language
for one request (the web app follows the browser's) asks ``translation(["tt"])`` for its own object.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DOMAIN", "LANGUAGES", "LOCALE_DIR", "N_", "_", "languages_from_env", "ngettext", "translation"]

#: The gettext domain (the catalogs' file name).
DOMAIN = "meshchat"
#: Languages with a complete catalog; the first is the source language.
LANGUAGES = ("en", "ru", "tt", "ba")
#: Where the catalogs are.
LOCALE_DIR = Path(__file__).parent / "locale"
#: Environment variables gettext consults, in its order.
_ENV_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def languages_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The user's languages from the environment, best first: ``LANG=ru_RU.UTF-8`` gives ``["ru_RU",
    "ru"]``; ``LANGUAGE=tt:ru`` gives ``["tt", "ru"]``. Empty for the C/POSIX locale or none set."""
    env = os.environ if environ is None else environ
    for variable in _ENV_VARIABLES:
        value = env.get(variable, "")
        if not value:
            continue
        found: list[str] = []
        for item in value.split(":") if variable == "LANGUAGE" else [value]:
            code = item.split(".")[0].split("@")[0]
            if not code or code in ("C", "POSIX"):
                continue
            for candidate in (code, code.split("_")[0]):
                if candidate not in found:
                    found.append(candidate)
        return found
    return []


def translation(languages: Sequence[str] | None = None) -> gettext.NullTranslations:
    """The catalog for the first of ``languages`` (default: the environment's) that meshchat has;
    English (the strings as written) when none is."""
    wanted = languages_from_env() if languages is None else list(languages)
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=wanted or ["en"], fallback=True)


def N_(message: str) -> str:  # noqa: N802 (gettext's name for "mark for extraction, translate later")
    """Mark ``message`` for the catalogs without translating it here (it is translated where shown)."""
    return message


_translation = translation()
#: Translate one of meshchat's own strings into the user's language.
_ = _translation.gettext
#: Translate a string with a count: ``ngettext("{n} message", "{n} messages", n).format(n=n)``.
ngettext = _translation.ngettext
