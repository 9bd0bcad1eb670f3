"""The documentation site: ``mkdocs build --strict`` passes, the CLI reference lists every command of
the typer app, the API pages carry ``Node.send``, the site loads nothing from the network, and every
``meshchat ...`` line of the tutorial still parses against the real command line."""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

import meshchat
from meshchat.cli import app

ROOT = Path(__file__).resolve().parent.parent
#: A strict build takes ~3 s here (mkdocstrings reads the whole package); this bounds a hung one.
BUILD_TIMEOUT = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page_text(site: Path, page: str) -> str:
    return html.unescape((site / page / "index.html").read_text("utf-8"))


def command_paths() -> list[str]:
    """Every command of the app, walked with click's API independently of docs/hooks.py."""
    root = typer.main.get_command(app)
    paths: list[str] = []

    def walk(command: Any, ctx: Any) -> None:
        paths.append(ctx.command_path)
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, sub.context_class(sub, info_name=name, parent=ctx))

    walk(root, root.context_class(root, info_name="meshchat"))
    return paths


def test_the_cli_reference_lists_every_command_with_its_options(site: Path) -> None:
    text = page_text(site, "cli")
    headings = set(re.findall(r"<h[2-6] id=\"[^\"]*\"><code>(meshchat[^<]*)</code>", text))
    paths = command_paths()
    assert len(paths) > 20  # the walk found the subcommands too
    assert set(paths) <= headings, set(paths) - headings
    assert "--mailbox MULTIADDR" in text and "--json" in text and "Usage: meshchat group send" in text


def test_the_api_reference_documents_node_send(site: Path) -> None:
    text = page_text(site, "api/node")
    assert 'id="meshchat.node.Node.send"' in text
    assert "Send <code>body</code> to <code>to</code>" in text  # the docstring itself, rendered
    assert 'id="meshchat.node.Node.open"' in text


def test_every_name_meshchat_exports_is_in_the_api_reference(site: Path) -> None:
    ids = set()
    for page in (site / "api").rglob("index.html"):
        ids.update(re.findall(r'id="(meshchat\.[\w.]+)"', page.read_text("utf-8")))
    short = {identifier.rsplit(".", 1)[1] for identifier in ids}
    missing = [name for name in meshchat.__all__ if name not in short]
    assert not missing, missing


def test_every_page_of_the_nav_is_built_and_nothing_loads_from_the_network(site: Path) -> None:
    for page in ("tutorial", "design", "cli", "daemon", "readme", "api", "api/groups", "api/errors"):
        assert (site / page / "index.html").is_file(), page
    for path in site.rglob("*.html"):
        text = path.read_text("utf-8")
        external = re.findall(r"<(?:link|script|img)[^>]+(?:href|src)=\"(https?://[^\"]+)\"", text)
        assert not external, (path, external)  # offline-capable: no web fonts, no CDN


def tutorial_commands() -> list[list[str]]:
    """The ``meshchat ...`` lines of the tutorial's shell blocks, split as the shell would."""
    text = (ROOT / "docs" / "tutorial.md").read_text("utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("meshchat "):
                words = re.sub(r"\$\([^)]*\)", "X", line.split(" > ")[0])  # no redirection, $(...) -> X
                commands.append(shlex.split(words.replace("$BOX", "/ip4/127.0.0.1/tcp/4003/p2p/X"))[1:])
    return commands


def test_every_tutorial_command_parses_against_the_real_cli() -> None:
    """Not a run (docs/tutorial.md was run by hand, literally): a renamed command or option fails here."""
    commands = tutorial_commands()
    assert len(commands) >= 15
    root: Any = typer.main.get_command(app)
    for args in commands:
        command, ctx, rest = root, root.context_class(root, info_name="meshchat"), list(args)
        while hasattr(command, "list_commands"):
            name, rest = rest[0], rest[1:]
            command = command.get_command(ctx, name)
            assert command is not None, args
            ctx = command.context_class(command, info_name=name, parent=ctx)
        command.make_context(name, rest, parent=ctx.parent)  # raises on an unknown option or argument
