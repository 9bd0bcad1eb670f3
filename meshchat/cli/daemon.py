"""``meshchat daemon``: a node driven by other programs over JSON-RPC 2.0 (docs/daemon.md).

It opens the profile's node as ``meshchat node`` does (the same ``--listen``, ``--bootstrap``,
``--mailbox`` and ``--mdns``), writes a fresh token to ``<profile>/daemon.token`` (mode 0600), serves
the JSON-RPC methods (``meshchat.app.methods``) on a Unix socket (``<profile>/daemon.sock`` or
``--socket PATH``, mode 0600; ``meshchat.app.unix``) and, with ``--ws-port N``, on a WebSocket at
``ws://127.0.0.1:N/rpc`` (``meshchat.app.server.serve_app`` without pages). It prints where it
listens (with ``--json``: one ``listening`` object) and runs until SIGINT or SIGTERM, then removes the
socket file and the token file and prints ``stopped``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from meshchat.cli.common import JsonOption, MailboxOption, ProfileOption
from meshchat.cli.network import BootstrapOption, ListenOption, _run_on_network
from meshchat.i18n import _

if TYPE_CHECKING:
    from meshchat.identity import Identity

__all__ = ["DAEMON_HELP", "daemon_command", "run_daemon"]

#: The command's help (its docstring is for the code's readers; this one is translated).
DAEMON_HELP = _(
    "Run the node for other programs: JSON-RPC 2.0 on a Unix socket (and a WebSocket), until Ctrl-C."
)


def daemon_command(
    *,
    profile: ProfileOption = None,
    socket_path: Annotated[
        Path | None,
        typer.Option(
            "--socket", metavar="PATH", help=_("The Unix socket to serve (default: PROFILE/daemon.sock).")
        ),
    ] = None,
    ws_port: Annotated[
        int | None,
        typer.Option(
            "--ws-port",
            metavar="N",
            min=0,
            max=65535,
            help=_("Also serve JSON-RPC on ws://127.0.0.1:N/rpc (0: a free port)."),
        ),
    ] = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    mdns: Annotated[bool, typer.Option("--mdns", help=_("Find peers on the local network (mDNS)."))] = False,
    json_output: JsonOption = False,
) -> None:
    """Run the node for other programs: JSON-RPC 2.0 on a Unix socket (and a WebSocket), until Ctrl-C."""
    _run_on_network(
        profile,
        listen,
        bootstrap,
        run_daemon,
        socket_path=socket_path,
        ws_port=ws_port,
        mailboxes=mailbox or [],
        mdns=mdns,
        json_lines=json_output,
        out=sys.stdout,
    )


def _say(out: TextIO, json_lines: bool, text: str, **fields: object) -> None:
    out.write((json.dumps(fields, ensure_ascii=False) if json_lines else text) + "\n")
    out.flush()


async def run_daemon(
    profile: Path,
    identity: Identity,
    *,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    mailboxes: Sequence[str],
    mdns: bool,
    socket_path: Path | None,
    ws_port: int | None,
    json_lines: bool,
    out: TextIO,
) -> None:
    """Serve the node of ``profile`` until SIGINT or SIGTERM (the module docstring says how)."""
    import trio  # noqa: PLC0415 (trio and py-libp2p only when the command runs)

    from meshchat.app.auth import new_token, write_token  # noqa: PLC0415
    from meshchat.app.methods import open_methods  # noqa: PLC0415
    from meshchat.app.unix import SOCKET_FILE, serve_unix  # noqa: PLC0415
    from meshchat.node import Node  # noqa: PLC0415

    path = socket_path if socket_path is not None else profile / SOCKET_FILE
    token = new_token()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            Node.open(
                profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes, mdns=mdns
            ) as node,
            open_methods(node) as methods,
        ):
            token_file = write_token(profile, token)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(functools.partial(serve_unix, methods, path, token=token))
                    port = None
                    if ws_port is not None:
                        from meshchat.app.server import serve_app  # noqa: PLC0415 (hypercorn)

                        serve = functools.partial(serve_app, methods, token=token, port=ws_port, pages=False)
                        port = await nursery.start(serve)
                    where = _("JSON-RPC on {socket}").format(socket=path)
                    if port is not None:
                        where += _(" and ws://127.0.0.1:{port}/rpc").format(port=port)
                    _say(
                        out,
                        json_lines,
                        _("{peer_id}: {where}; token in {token_file}").format(
                            peer_id=node.peer_id, where=where, token_file=token_file
                        ),
                        event="listening",
                        peer_id=node.peer_id,
                        addrs=node.listen_addrs,
                        socket=str(path),
                        ws_port=port,
                        token_file=str(token_file),
                    )
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        _say(
                            out,
                            json_lines,
                            _("stopped ({signal})").format(signal=name),
                            event="stopped",
                            signal=name,
                        )
                        nursery.cancel_scope.cancel()
                        break
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(token_file)
