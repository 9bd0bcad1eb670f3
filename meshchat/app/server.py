"""Serve the web app (``meshchat.app.web``) with Hypercorn's trio worker on 127.0.0.1.

```python
async with open_methods(node) as methods, trio.open_nursery() as nursery:
    port = await nursery.start(functools.partial(serve_app, methods, token=token))
    print(f"http://127.0.0.1:{port}/?token={token}")
```

It binds 127.0.0.1 only, never a public interface: the app is for the user at this machine (the
token, Host and Origin checks in ``web`` guard against other local users and web sites; the bind
guards against the network). Port 0 lets the system choose; ``task_status.started`` reports the port
bound. Cancelling the caller's scope stops it gracefully: Hypercorn stops accepting, lets the requests
in flight finish and closes WebSockets, within ``GRACEFUL_TIMEOUT``, then returns.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from meshchat.app.web import MAX_FRAME, build_app
from meshchat.net.host import only_exception

if TYPE_CHECKING:
    from meshchat.app.methods import Methods

__all__ = ["GRACEFUL_TIMEOUT", "HOST", "serve_app"]

#: The only address the app listens on.
HOST = "127.0.0.1"
#: Seconds a stopping server gives its open requests and WebSockets to finish (a browser's socket
#: closes at once; a request in flight waits at most for one send's prekey fetch, 3 s).
GRACEFUL_TIMEOUT = 5.0
#: Hypercorn's own log (start-up lines, errors of the app): kept in the logging tree, not on stderr;
#: ``meshchat app`` prints its own URL.
_LOG = logging.getLogger("meshchat.app.server")


def _listening_socket(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:``port`` (``OSError`` if taken; nothing left open then). Bound here,
    not by Hypercorn, so that a taken port raises before anything starts and leaks no socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, as Hypercorn does
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def _config(sock: socket.socket) -> Config:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns and closes it from here
    config.websocket_max_message_size = MAX_FRAME
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = _LOG
    return config


async def serve_app(
    methods: Methods | None,
    *,
    token: str,
    port: int = 0,
    pages: bool = True,
    task_status: Any = trio.TASK_STATUS_IGNORED,  # trio.TaskStatus[int] (the stubs in use lack it)
) -> None:
    """Serve the app over ``methods`` on 127.0.0.1:``port`` until cancelled; report the bound port.

    ``pages=False`` serves only the ``/rpc`` WebSocket (``meshchat daemon --ws-port``). ``methods``
    may be ``None`` for the pages alone (their tests). Raises ``OSError`` if the port is taken.
    """
    shutdown = trio.Event()
    app = build_app(methods, token=token, pages=pages, stopping=shutdown)
    config = _config(_listening_socket(port))
    # Hypercorn shuts down gracefully when its trigger fires, but a cancelled scope would cancel its
    # tasks at once; so it runs shielded, and our cancellation becomes its trigger (with a deadline).
    shield = trio.CancelScope(shield=True)

    async def run(task_status: Any) -> None:
        with shield:
            # our plain ASGI callable's types are looser than Hypercorn's TypedDict scopes; same protocol
            await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]

    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(run)
            task_status.started(int(binds[0].rsplit(":", 1)[1]))
            try:
                await trio.sleep_forever()
            finally:
                shutdown.set()
                shield.deadline = trio.current_time() + GRACEFUL_TIMEOUT + 1.0
    except BaseExceptionGroup as group:
        single = only_exception(group)
        if single is None:
            raise
        raise single from None
