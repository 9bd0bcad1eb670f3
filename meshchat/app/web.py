"""The local web app as an ASGI application: pages, static files, ``/i18n.json`` and the ``/rpc`` WebSocket.

What runs under trio: everything. ``meshchat.app.server`` serves this app with Hypercorn's trio worker
(``hypercorn.trio.serve``), which runs each connection as a trio task; Starlette itself is written
against anyio, and anyio, finding itself inside ``trio.run``, uses its trio backend (its
``to_thread`` for static file reads is ``trio.to_thread``). So the ``/rpc`` handler below calls trio
directly (nurseries, locks) and the JSON-RPC methods run in the same trio run as the ``Node``.

What it is not: a public web server. It answers only on 127.0.0.1 (the server binds nothing else)
and only one local user, the one who holds the token:

- **Host.** A request must name ``127.0.0.1``, ``localhost`` or ``[::1]`` in its ``Host`` header, else
  403: a web site that points its own DNS name at 127.0.0.1 (DNS rebinding) gets nothing.
- **Origin.** A request that carries an ``Origin`` must come from this app's own origin
  (``http://127.0.0.1:PORT`` or ``http://localhost:PORT``), else 403: another page open in the same
  browser cannot drive ``/rpc`` (browsers do not apply the same-origin policy to WebSockets).
- **Token.** Every path needs the run's token (``meshchat.app.auth``): ``?token=`` in the URL, an
  ``Authorization: Bearer`` header, or the cookie. A page URL with the right ``?token=`` answers with
  the cookie (HttpOnly: the page's script never sees it; SameSite=Strict: no other site's request
  carries it) and a redirect to the same path without the token, so the token leaves the address bar.
  The cookie's name carries the port (``meshchat_token_PORT``): cookies ignore ports, and two profiles'
  apps on one machine must not overwrite each other's.
- **Headers.** Every response has a Content-Security-Policy allowing only this origin's own scripts,
  styles and connections (no inline script, no eval; images also from ``data:`` for QR codes),
  ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` (the token never leaks in a Referer)
  and ``Cache-Control: no-store``.

``/rpc`` carries JSON-RPC 2.0 (``meshchat.app.jsonrpc``) in text frames, at most ``MAX_FRAME`` bytes
each (Hypercorn closes the socket with 1009 past that). Requests of one socket are answered
concurrently, up to ``MAX_IN_FLIGHT`` at a time (the socket is not read further until one finishes),
and events arrive as notifications on the same socket.
"""

from __future__ import annotations

import gettext
import re
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from meshchat.app.auth import check_token
from meshchat.app.strings import UI_STRINGS
from meshchat.i18n import DOMAIN, LOCALE_DIR, _, languages_from_env, translation

if TYPE_CHECKING:
    from meshchat.app.methods import Methods

__all__ = [
    "COOKIE_PREFIX",
    "LOCAL_HOSTS",
    "MAX_FRAME",
    "MAX_IN_FLIGHT",
    "STATIC_DIR",
    "build_app",
    "cookie_name",
    "requested_languages",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The host names a request may use (the server listens on 127.0.0.1 only; ``localhost`` and
#: ``[::1]`` are what a user may type). Anything else is DNS rebinding or a misdirected request.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
#: The page origins' host names (``[::1]`` is not one: the server does not listen there).
ORIGIN_HOSTS = ("127.0.0.1", "localhost")
#: The token cookie's name, followed by ``_PORT``.
COOKIE_PREFIX = "meshchat_token"
#: Largest WebSocket message on ``/rpc``: the JSON-RPC layer's own bound on a request (1 MiB), so a
#: client cannot make the server buffer more than one request's worth per frame.
MAX_FRAME = 1024 * 1024
#: Requests of one ``/rpc`` socket handled at once; past that the socket is not read until one is done.
#: Enough for a page that loads a conversation while it sends; a request waits at most seconds
#: (a first message's prekey fetch: 3 s), so 8 keep a page responsive without letting one socket
#: start unbounded work.
MAX_IN_FLIGHT = 8
#: The pages' files (index.html, app.js, app.css), served by the node itself: no CDN.
STATIC_DIR = Path(__file__).parent / "static"
#: Languages named in one Accept-Language header that are considered (browsers send a handful).
MAX_ACCEPT_LANGUAGES = 16
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*$")


def cookie_name(port: int) -> str:
    """The token cookie's name for the app on ``port``."""
    return f"{COOKIE_PREFIX}_{port}"


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers, lower-case names, the first of each kept (latin-1, as HTTP/1.1 has it)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _host_name(host: str) -> str | None:
    """``Host``'s name without its port (``None`` if malformed): ``[::1]:8080`` -> ``[::1]``."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[: end + 1], host[end + 1 :]
    else:
        name, _, port = host.partition(":")
        rest = ":" + port if port else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name.lower()


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _without_token(scope: Scope) -> str:
    """The request's path and query with ``token`` taken out (where the redirect goes)."""
    query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != "token"]
    # one leading slash and the path re-quoted: "//evil.example" must not become a redirect off-site
    path = "/" + quote(str(scope.get("path", "/")).lstrip("/"), safe="/")
    return path + ("?" + urlencode(query) if query else "")


def _query_token(scope: Scope) -> str | None:
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if key == "token":
            return str(value)
    return None


def _security_headers(host: str, port: int) -> list[tuple[bytes, bytes]]:
    # 'self' covers ws: on the same host and port in CSP 3; the explicit ws:// source is for browsers
    # that predate that rule. ``host`` has passed the Host check, so it is one of LOCAL_HOSTS.
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host}:{port}; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    )
    return [
        (b"content-security-policy", policy.encode("latin-1")),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]


class _Guard:
    """The checks in the module docstring, in front of every route (plain ASGI, so they cover
    WebSockets too: a refused socket is closed before it is accepted, which Hypercorn answers with 403)."""

    def __init__(self, app: Asgi, *, token: str, pages: bool) -> None:
        self._app = app
        self._token = token
        self._pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)  # lifespan
            return
        headers = _headers(scope)
        server = scope.get("server") or ("127.0.0.1", 0)
        port = int(server[1] or 0)
        host = _host_name(headers.get("host", ""))
        if host not in LOCAL_HOSTS:
            await _refuse(scope, send, _("This app answers only to 127.0.0.1 or localhost."))
            return
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{h}:{port}" for h in ORIGIN_HOSTS}:
            await _refuse(scope, send, _("Requests from other web sites are refused."))
            return
        from_query = _query_token(scope)
        given = (
            from_query
            or _bearer(headers.get("authorization", ""))
            or _cookie(headers.get("cookie", ""), cookie_name(port))
        )
        if not check_token(given, self._token):
            await _refuse(scope, send, _("A valid token is needed: open the address `meshchat app` printed."))
            return
        if kind == "http" and from_query is not None and self._pages:
            await _set_cookie(
                send, cookie_name(port), self._token, _without_token(scope), host=host, port=port
            )
            return
        if kind == "websocket":
            await self._app(scope, receive, send)
            return
        extra = _security_headers(host, port)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._app(scope, receive, send_with_headers)


async def _refuse(scope: Scope, send: Send, reason: str) -> None:
    """403 for an HTTP request; for a WebSocket, a close before accepting (Hypercorn sends the 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = (reason + "\n").encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _set_cookie(send: Send, name: str, token: str, location: str, *, host: str, port: int) -> None:
    cookie = f"{name}={token}; HttpOnly; SameSite=Strict; Path=/"
    headers = [
        (b"location", location.encode("latin-1")),
        (b"set-cookie", cookie.encode("latin-1")),
        (b"content-length", b"0"),
        *_security_headers(host, port),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


# --- languages ------------------------------------------------------------------------------------


def requested_languages(query_lang: str | None, accept_language: str | None) -> list[str]:
    """The languages a request asks for, best first: ``?lang=`` if given, else its Accept-Language
    (by q-value), else the environment's. Tags become gettext's form (``ru-RU`` -> ``ru_RU``, ``ru``);
    malformed ones are skipped."""
    if query_lang:
        tags = [(query_lang, 1.0)]
    elif accept_language:
        tags = []
        for item in accept_language.split(",")[:MAX_ACCEPT_LANGUAGES]:
            tag, _, params = item.strip().partition(";")
            weight = 1.0
            if params.strip().startswith("q="):
                try:
                    weight = float(params.strip()[2:])
                except ValueError:
                    continue
            tags.append((tag.strip(), weight))
        tags.sort(key=lambda pair: -pair[1])  # stable: equal weights keep the header's order
    else:
        return languages_from_env()
    found: list[str] = []
    for tag, weight in tags:
        if weight <= 0 or not _LANGUAGE_TAG.match(tag):
            continue
        code = tag.replace("-", "_")
        for candidate in (code, code.split("_")[0].lower()):
            if candidate not in found:
                found.append(candidate)
    return found


def _i18n_table(languages: list[str]) -> dict[str, object]:
    catalog = translation(languages)
    chosen = next((lang for lang in languages if gettext.find(DOMAIN, LOCALE_DIR, [lang])), "en")
    return {
        "lang": chosen.split("_")[0],
        "strings": {msgid: catalog.gettext(msgid) for msgid in UI_STRINGS},
    }


async def _i18n(request: Request) -> Response:
    languages = requested_languages(request.query_params.get("lang"), request.headers.get("accept-language"))
    return JSONResponse(_i18n_table(languages))


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


# --- /rpc ------------------------------------------------------------------------------------------


def _rpc_endpoint(methods: Methods, stopping: trio.Event) -> Callable[[WebSocket], Awaitable[None]]:
    from meshchat.app.jsonrpc import open_session  # noqa: PLC0415 (the layer below; keeps imports light)

    async def rpc(websocket: WebSocket) -> None:
        await websocket.accept()
        sending = trio.Lock()  # one frame at a time: replies and notifications come from many tasks

        async def send(text: str) -> None:
            async with sending:
                await websocket.send_text(text)  # after the client left, Hypercorn drops it quietly

        limiter = trio.CapacityLimiter(MAX_IN_FLIGHT)
        reading = trio.CancelScope()

        async def go_away() -> None:
            await stopping.wait()
            reading.cancel()

        async with open_session(methods, send) as session, trio.open_nursery() as watching:
            watching.start_soon(go_away)

            async def answer(frame: str | bytes, borrower: object) -> None:
                try:
                    reply = await session.handle(frame)
                    if reply is not None:
                        await send(reply)
                finally:
                    limiter.release_on_behalf_of(borrower)

            async with trio.open_nursery() as answering:
                with reading:
                    while True:
                        message = await websocket.receive()
                        if message["type"] == "websocket.disconnect":
                            break  # requests in flight finish; their answers go nowhere
                        frame = message.get("text")
                        if frame is None:
                            frame = message.get("bytes") or b""
                        borrower = object()
                        await limiter.acquire_on_behalf_of(borrower)
                        answering.start_soon(answer, frame, borrower)
                if reading.cancelled_caught:  # the server is stopping: tell the client at once
                    answering.cancel_scope.cancel()
                    async with sending:
                        await websocket.close(code=1001)  # going away; the page reconnects later
            watching.cancel_scope.cancel()

    return rpc


def build_app(
    methods: Methods | None, *, token: str, pages: bool = True, stopping: trio.Event | None = None
) -> Asgi:
    """The ASGI app over ``methods`` (``None``: no ``/rpc``, pages only, for tests of the pages alone).
    With ``pages=False`` it serves only ``/rpc`` (``meshchat daemon --ws-port``). Setting ``stopping``
    closes every ``/rpc`` socket with 1001 (going away) at once, so a server shutting down need not
    wait out its grace period for browsers that would keep them open."""
    routes: list[Route | WebSocketRoute | Mount] = []
    if methods is not None:
        routes.append(
            WebSocketRoute("/rpc", _rpc_endpoint(methods, trio.Event() if stopping is None else stopping))
        )
    if pages:
        routes += [
            Route("/", _index),
            Route("/i18n.json", _i18n),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    return _Guard(Starlette(routes=routes), token=token, pages=pages)
