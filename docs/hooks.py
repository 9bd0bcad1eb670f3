"""mkdocs hooks: the CLI reference rendered from the typer app, so it never drifts from the code.

``docs/cli.md`` holds the page's prose and a marker line, ``<!-- cli-reference -->``; this hook
replaces the marker with every command of ``meshchat.cli.app`` (group commands and their
subcommands, recursively): its usage line, help text and a table of its arguments and options, taken
from click's own objects (``typer.main.get_command``), in English whatever the builder's locale. A
command another module registers appears on the next build with no change here.

The project's ``README.md`` becomes the page ``readme.md`` (generated, in memory), so the design and
tutorial pages link its sections instead of copying text that would drift.

It also stands in for ``docs/daemon.md`` (the JSON-RPC reference, written beside the daemon) while
that file does not exist: an in-memory page saying so, never written to disk, so the nav entry and
links to it stay checked by ``mkdocs build --strict``. Once the real file exists this does nothing.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

#: The line of docs/cli.md that the generated reference replaces.
CLI_MARKER = "<!-- cli-reference -->"
#: The line of docs/api/index.md that the exports no page documents replace.
EXPORTS_MARKER = "<!-- undocumented-exports -->"
#: A ``members: [A, B]`` (or ``members: false``: none) line in a mkdocstrings directive's options.
_MEMBERS = re.compile(r"^\s+members:\s*(?:\[(?P<names>[^\]]*)\]|false)\s*$")
#: The JSON-RPC reference's page, and what stands in for it until it is written.
DAEMON_PAGE = "daemon.md"
#: The README's page in the site.
README_PAGE = "readme.md"
DAEMON_PLACEHOLDER = """# Daemon (JSON-RPC)

This page will hold the reference of `meshchat daemon`: its JSON-RPC 2.0 methods over a Unix socket
or a WebSocket on 127.0.0.1, their parameters and results, the events it pushes and its errors. It is
written beside the daemon and has not landed in this build yet. Meanwhile the
[design](design.md#the-daemon-and-the-app) says what the daemon is.
"""

_ROOT = Path(__file__).resolve().parent.parent
#: Sphinx cross-reference roles a few docstrings use (":meth:`x`"): Markdown shows them as text.
_SPHINX_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):(<code>)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README's page, and the daemon page's placeholder while ``docs/daemon.md`` is missing."""
    files.append(File.generated(config, README_PAGE, content=(_ROOT / "README.md").read_text("utf-8")))
    if files.get_file_from_path(DAEMON_PAGE) is None:
        files.append(File.generated(config, DAEMON_PAGE, content=DAEMON_PLACEHOLDER))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Put the generated CLI reference in place of ``CLI_MARKER``, and the exports no API page
    documents in place of ``EXPORTS_MARKER``."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if EXPORTS_MARKER in markdown:
        markdown = markdown.replace(EXPORTS_MARKER, undocumented_exports(Path(config.docs_dir) / "api"))
    return markdown


def undocumented_exports(api_dir: Path) -> str:
    """mkdocstrings directives for every name in ``meshchat.__all__`` that no page under ``api_dir``
    documents, so a new export appears in the reference before anyone writes a page for it.

    A page documents what its ``::: path`` lines name: the object itself, the names listed in its
    ``members: [...]`` option, or, for a module without that option, its public names. Objects are
    compared by identity (``meshchat.Invite`` is ``meshchat.wire.invite.Invite``).
    """
    _on_path()
    import meshchat  # noqa: PLC0415

    documented: set[int] = set()
    for page in sorted(api_dir.glob("*.md")):
        for path, members in _directives(page.read_text("utf-8")):
            target = _resolve(path)
            if members is not None:
                documented.update(id(getattr(target, name, None)) for name in members)
            elif isinstance(target, ModuleType):
                public = getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")])
                documented.update(id(getattr(target, name, None)) for name in public)
            else:
                documented.add(id(target))
    lines = []
    for name in meshchat.__all__:
        value = getattr(meshchat, name)
        if id(value) not in documented:
            lines.append(f"::: {value.__module__}.{name}\n")
    return "\n".join(lines) if lines else "Every export is documented on one of the pages above.\n"


def _directives(markdown: str) -> list[tuple[str, list[str] | None]]:
    """Each ``::: path`` of a page with the names of its ``members: [...]`` option (``None``: none)."""
    found: list[tuple[str, list[str] | None]] = []
    in_options = False  # the indented lines right after a directive are its options
    for line in markdown.splitlines():
        if line.startswith("::: "):
            found.append((line[4:].strip(), None))
            in_options = True
        elif in_options and (match := _MEMBERS.match(line)) is not None:
            found[-1] = (found[-1][0], [n.strip() for n in (match["names"] or "").split(",") if n.strip()])
        elif not line[:1].isspace():
            in_options = False
    return found


def _resolve(path: str) -> Any:
    """The object a mkdocstrings identifier names (a module, or an attribute of one)."""
    try:
        return importlib.import_module(path)
    except ImportError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Drop the Sphinx role prefix before rendered docstring code (":meth:`x`" shows as ``x``)."""
    return _SPHINX_ROLE.sub(r"\1", html)


def _on_path() -> None:
    """Import ``meshchat`` from the checkout being built, not from another install."""
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))


def _context(command: Any, name: str, parent: Any = None) -> Any:
    """A click context for ``command`` as the app would make it (its help option names included)."""
    return command.context_class(command, info_name=name, parent=parent, **command.context_settings)


def _load_app() -> Any:
    """The ``meshchat`` command as click sees it, from this checkout, with English help texts.

    typer vendors click (``typer._click``), so the objects are used by their click API (``Context``,
    ``get_usage``, ``get_params``, ``get_help_record``, ``list_commands``) without importing click.
    """
    _on_path()
    saved = os.environ.get("LANGUAGE")
    os.environ["LANGUAGE"] = "en"  # meshchat.i18n binds its language at import: the source strings
    try:
        import typer  # noqa: PLC0415

        from meshchat.cli import app  # noqa: PLC0415
    finally:
        if saved is None:
            del os.environ["LANGUAGE"]
        else:
            os.environ["LANGUAGE"] = saved
    return typer.main.get_command(app)


def cli_reference() -> str:
    """Markdown for every command of the ``meshchat`` app, depth first, in the app's own order."""
    root = _load_app()
    out: list[str] = []
    _command(root, _context(root, "meshchat"), out, depth=0)
    return "\n".join(out)


def command_paths() -> list[str]:
    """Every command's full name (``meshchat group send``, ...): what the reference must list."""
    root = _load_app()
    paths: list[str] = []

    def walk(command: Any, ctx: Any) -> None:
        paths.append(ctx.command_path)
        for name in command.list_commands(ctx) if hasattr(command, "list_commands") else ():
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                walk(sub, _context(sub, name, ctx))

    walk(root, _context(root, "meshchat"))
    return paths


def _command(command: Any, ctx: Any, out: list[str], *, depth: int) -> None:
    out.append(f"{'#' * min(3 + depth, 6)} `{ctx.command_path}`\n")
    text = (command.help or command.short_help or "").strip()
    if text:
        out.append(_escape(text) + "\n")
    out.append("```text\n" + command.get_usage(ctx).strip() + "\n```\n")
    rows = [row for param in command.get_params(ctx) if (row := _param_row(param, ctx)) is not None]
    if rows:
        out.append("| argument or option | description |\n|---|---|")
        out.extend(f"| {names} | {help_text} |" for names, help_text in rows)
        out.append("")
    if not hasattr(command, "list_commands"):
        return
    names = command.list_commands(ctx)
    if names:
        out.append("Commands: " + ", ".join(f"`{name}`" for name in names) + ".\n")
    for name in names:
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            _command(sub, _context(sub, name, ctx), out, depth=depth + 1)


def _param_row(param: Any, ctx: Any) -> tuple[str, str] | None:
    """``(names, description)`` for one argument or option; ``None`` for a hidden one."""
    if getattr(param, "hidden", False):
        return None
    record = param.get_help_record(ctx)
    if record is None:
        return None
    names, help_text = record
    if param.param_type_name == "argument" and not param.required:
        help_text = f"{help_text} (optional)".strip()
    return f"`{_cell(names)}`", _escape(_cell(help_text))


def _cell(text: str) -> str:
    """One table cell: no newlines, no bare pipes."""
    return " ".join(text.split()).replace("|", "\\|")


def _escape(text: str) -> str:
    """Help text as Markdown text: angle brackets shown, not read as HTML."""
    return text.replace("<", "&lt;").replace(">", "&gt;")
