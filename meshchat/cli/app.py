"""``meshchat app``: the local web messenger, served by the profile's node on 127.0.0.1.

The node runs as under ``meshchat node`` (same profile checks, passphrase, ``--listen``,
``--bootstrap``, ``--mailbox``: ``meshchat.cli.network``'s options and start-up), with the JSON-RPC
methods (``meshchat.app.methods``) and the web app (``meshchat.app.server``) over it. A fresh token
each run; the URL that carries it is printed on stdout, alone on its line, for scripts; a browser is
opened on it unless ``--no-open``. Ctrl-C (or SIGTERM) stops the app and the node.
"""

from __future__ import annotations

import signal
import sys
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from meshchat.cli.common import CommandError, MailboxOption, ProfileOption
from meshchat.cli.network import BootstrapOption, ListenOption, _run_on_network
from meshchat.i18n import _

if TYPE_CHECKING:
    from meshchat.identity import Identity

__all__ = ["app_command", "run_app"]


def app_command(
    *,
    profile: ProfileOption = None,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="N",
            min=0,
            max=65535,
            help=_("Serve the app on 127.0.0.1:N (0: any free port)."),
        ),
    ] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help=_("Do not open a browser; only print the URL."))
    ] = False,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
) -> None:
    """Run the node with the web app on 127.0.0.1 until Ctrl-C; print the app's URL (it carries the
    run's token: keep it to yourself)."""
    _run_on_network(
        profile, listen, bootstrap, run_app, port=port, open_browser=not no_open, mailboxes=mailbox or []
    )


async def run_app(
    profile: Path,
    identity: Identity,
    *,
    listen: list[str],
    bootstrap: list[str],
    port: int,
    open_browser: bool,
    mailboxes: list[str],
    out: TextIO | None = None,
) -> None:
    """Open the node, serve the app, print the URL; stop at SIGINT or SIGTERM."""
    import functools  # noqa: PLC0415

    import trio  # noqa: PLC0415

    from meshchat.app.auth import new_token  # noqa: PLC0415
    from meshchat.app.methods import open_methods  # noqa: PLC0415
    from meshchat.app.server import serve_app  # noqa: PLC0415
    from meshchat.node import Node  # noqa: PLC0415

    stdout = out or sys.stdout
    token = new_token()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            Node.open(
                profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
            ) as node,
            open_methods(node) as methods,
            trio.open_nursery() as nursery,
        ):
            try:
                bound = await nursery.start(functools.partial(serve_app, methods, token=token, port=port))
            except OSError as exc:  # the port is taken (or not ours to use)
                raise CommandError(
                    _("cannot serve the app on 127.0.0.1:{port}: {reason}").format(
                        port=port, reason=exc.strerror or exc
                    )
                ) from exc
            url = f"http://127.0.0.1:{bound}/?token={token}"
            stdout.write(url + "\n")
            stdout.flush()
            sys.stderr.write(
                _("meshchat app for {peer} runs at the address above; Ctrl-C stops it.").format(
                    peer=node.peer_id
                )
                + "\n"
            )
            if open_browser:
                # abandon_on_cancel: a browser that never returns does not hold up Ctrl-C (the stubs in use
                # predate the argument)
                opened = await trio.to_thread.run_sync(webbrowser.open, url, abandon_on_cancel=True)  # type: ignore[call-arg]
                if not opened:
                    sys.stderr.write(_("no browser found: open the address above yourself") + "\n")
            async for _signum in signals:
                nursery.cancel_scope.cancel()
                break
    sys.stderr.write(_("stopped") + "\n")
