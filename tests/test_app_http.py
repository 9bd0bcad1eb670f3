"""The web app's HTTP side on a real Hypercorn server on 127.0.0.1: token, Host and Origin checks, the
cookie flow, security headers, static files and the translated string table.

Starlette's TestClient is not trio, so these run the real server (``serve_app``) and talk to it with
httpx (over anyio's trio backend) and, for WebSocket handshakes, a raw socket.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket
from conftest import make_profile

from meshchat.app.auth import new_token
from meshchat.app.methods import open_methods
from meshchat.app.server import serve_app
from meshchat.app.strings import UI_STRINGS
from meshchat.app.web import MAX_FRAME, STATIC_DIR, _without_token, cookie_name, requested_languages
from meshchat.i18n import translation
from meshchat.node import Node

TIMEOUT = 30


@asynccontextmanager
async def running_app(token: str) -> AsyncIterator[int]:
    """The pages alone (no node behind ``/rpc``) on a free port of 127.0.0.1."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_app, None, token=token))
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


async def handshake_status(port: int, path: str, headers: dict[str, str]) -> int:
    """The HTTP status a WebSocket upgrade request for ``path`` gets (101 if accepted)."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while b"\r\n" not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, "connection closed before a status line"
            data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    assert match is not None, data
    return int(match.group(1))


async def test_requests_without_the_right_token_get_403() -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with running_app(token) as port, httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{port}"
            for path in ("/", "/static/app.js", "/i18n.json", "/rpc"):
                assert (await client.get(base + path)).status_code == 403, path
            assert (await client.get(base + "/?token=" + new_token())).status_code == 403
            wrong = {"Authorization": "Bearer " + new_token()}
            assert (await client.get(base + "/i18n.json", headers=wrong)).status_code == 403
            stale = {"Cookie": f"{cookie_name(port)}={new_token()}"}
            assert (await client.get(base + "/i18n.json", headers=stale)).status_code == 403
            # a cookie of the right value under another port's name is not this app's
            other = {"Cookie": f"{cookie_name(port + 1)}={token}"}
            assert (await client.get(base + "/i18n.json", headers=other)).status_code == 403
            right = {"Authorization": f"Bearer {token}"}
            assert (await client.get(base + "/i18n.json", headers=right)).status_code == 200


async def test_foreign_host_is_refused_even_with_the_token() -> None:
    """DNS rebinding: a site whose name resolves to 127.0.0.1 sends its own name as Host."""
    token = new_token()
    auth = {"Authorization": f"Bearer {token}"}
    with trio.fail_after(TIMEOUT):
        async with running_app(token) as port, httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}/i18n.json"
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "127.0.0.2", ""):
                response = await client.get(url, headers={**auth, "Host": host})
                assert response.status_code == 403, host
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
                response = await client.get(url, headers={**auth, "Host": host})
                assert response.status_code == 200, host
            assert await handshake_status(port, f"/rpc?token={token}", {"Host": "evil.example"}) == 403


async def test_foreign_origin_is_refused_on_pages_and_rpc() -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with running_app(token) as port, httpx.AsyncClient() as client:
            auth = {"Authorization": f"Bearer {token}", "Host": f"127.0.0.1:{port}"}
            url = f"http://127.0.0.1:{port}/i18n.json"
            for origin in (
                "http://evil.example",
                f"http://127.0.0.1:{port + 1}",
                "null",
                f"https://127.0.0.1:{port}",
            ):
                assert (await client.get(url, headers={**auth, "Origin": origin})).status_code == 403, origin
                status = await handshake_status(port, f"/rpc?token={token}", {**auth, "Origin": origin})
                assert status == 403, origin
            for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                assert (await client.get(url, headers={**auth, "Origin": origin})).status_code == 200


async def test_token_in_the_url_becomes_a_strict_httponly_cookie_and_leaves_the_url() -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with running_app(token) as port, httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{port}"
            response = await client.get(f"{base}/?token={token}&lang=ru")
            assert response.status_code == 303
            assert response.headers["location"] == "/?lang=ru"
            cookie = response.headers["set-cookie"]
            assert cookie.startswith(f"{cookie_name(port)}={token};")
            assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
            assert response.headers["referrer-policy"] == "no-referrer"
            for path, location in (("//evil.example/x", "/evil.example/x"), ("/a b", "/a%20b")):
                moved = await client.get(f"{base}{path}?token={token}")
                assert moved.status_code == 303 and moved.headers["location"] == location, path
            # the client keeps the cookie and is let in from now on, without the token in the URL
            page = await client.get(base + "/")
            assert page.status_code == 200
            assert '<script type="module" src="/static/app.js"></script>' in page.text
            assert token not in page.text


async def test_security_headers_and_static_files() -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with (
            running_app(token) as port,
            httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client,
        ):
            base = f"http://127.0.0.1:{port}"
            page = await client.get(base + "/")
            policy = page.headers["content-security-policy"]
            directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
            assert directives["default-src"] == ["'self'"]
            assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
            assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
            assert directives["frame-ancestors"] == ["'none'"]
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["referrer-policy"] == "no-referrer"
            assert page.headers["x-content-type-options"] == "nosniff"
            assert "<script>" not in page.text, "no inline script"
            assert not re.search(r"\son[a-z]+\s*=", page.text), "no inline event handler"
            for name in sorted(p.name for p in STATIC_DIR.iterdir()):
                response = await client.get(f"{base}/static/{name}")
                assert response.status_code == 200, name
                assert response.content == (STATIC_DIR / name).read_bytes()
                assert response.headers["content-security-policy"] == policy
                loads = response.text.replace(
                    "http://www.w3.org/2000/svg", ""
                )  # a namespace name, not a load
                assert "http://" not in loads and "https://" not in loads, (
                    f"{name} loads something from elsewhere"
                )
            js = await client.get(base + "/static/app.js")
            assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
            assert (await client.get(base + "/static/../web.py")).status_code == 404
            assert (await client.get(base + "/static/nothing.js")).status_code == 404


async def test_i18n_json_follows_lang_then_accept_language() -> None:
    token = new_token()
    russian = translation(["ru"])
    with trio.fail_after(TIMEOUT):
        async with (
            running_app(token) as port,
            httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client,
        ):
            url = f"http://127.0.0.1:{port}/i18n.json"
            table = (await client.get(url, params={"lang": "ru"})).json()
            assert set(table["strings"]) == set(UI_STRINGS)
            assert table["strings"] == {m: russian.gettext(m) for m in UI_STRINGS}
            by_header = (await client.get(url, headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"})).json()
            assert by_header == table
            english = (await client.get(url, params={"lang": "en"})).json()
            assert english["lang"] == "en"
            assert english["strings"] == {m: m for m in UI_STRINGS}
            # a language meshchat has no catalog for falls back to English
            assert (await client.get(url, params={"lang": "xx"})).json()["strings"]["Send"] == "Send"
    if table["lang"] == "ru":  # the Russian catalog exists: the table really is Russian
        assert table["strings"]["Send"] != "Send"


def test_without_lang_or_accept_language_the_environment_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "tt_RU.UTF-8")
    assert requested_languages(None, None) == ["tt_RU", "tt"]
    assert requested_languages(None, "") == ["tt_RU", "tt"]
    assert requested_languages("", "ba") == ["ba"]


def test_accept_language_order_and_garbage() -> None:
    assert requested_languages(None, "tt;q=0.5, ru-RU;q=0.9, en;q=0.1") == ["ru_RU", "ru", "tt", "en"]
    assert requested_languages("ba", "ru") == ["ba"]
    assert requested_languages(None, "*, <script>, ru;q=abc, de;q=0") == []
    assert requested_languages(None, ",".join(["ru"] * 1000)) == ["ru"]


def test_every_string_the_script_shows_is_in_the_table() -> None:
    """t("...") and data-i18n in the static files name only msgids of meshchat.app.strings."""
    used: set[str] = set()
    for path in Path(STATIC_DIR).glob("*.js"):
        used |= set(re.findall(r'\bt\(\s*"((?:[^"\\]|\\.)*)"', path.read_text(encoding="utf-8")))
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    used |= set(re.findall(r'data-i18n(?:-placeholder)?="([^"]*)"', html))
    assert used, "the pattern found nothing"
    assert used - set(UI_STRINGS) == set()


async def test_port_taken_raises_os_error() -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with running_app(token) as port:
            with pytest.raises(OSError):
                await serve_app(None, token=token, port=port)


async def test_cancelling_stops_the_server_and_frees_the_port() -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with running_app(token) as port, httpx.AsyncClient() as client:
            assert (
                await client.get(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {token}"})
            ).is_success
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


@asynccontextmanager
async def node_app(tmp_path: Path, token: str) -> AsyncIterator[int]:
    """A real node on 127.0.0.1 with the whole app (pages and ``/rpc``) over it."""
    folder, _ = make_profile(tmp_path, "alice", 1)
    async with (
        Node.open(folder, listen=["/ip4/127.0.0.1/tcp/0"], dht=False) as node,
        open_methods(node) as methods,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(functools.partial(serve_app, methods, token=token))
        yield port
        nursery.cancel_scope.cancel()


async def open_raw_websocket(port: int, token: str) -> trio.SocketStream:
    """A WebSocket on ``/rpc`` opened by hand, to be dropped without a close frame."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    request = (
        f"GET /rpc?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode("ascii"))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        assert chunk
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data
    return stream


def client_frame(text: str) -> bytes:
    """One text frame (RFC 6455 section 5.2) as a client sends it: masked, with the all-zero key
    (valid, and it leaves the payload as is: these tests are not about masking)."""
    payload = text.encode("utf-8")
    mask = bytes(4)
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return bytes([0x81]) + length + mask + payload


async def rpc_call(socket: trio_websocket.WebSocketConnection, method: str, request_id: int = 1) -> object:
    await socket.send_message(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}})
    )
    reply = json.loads(await socket.get_message())
    assert reply["id"] == request_id, reply
    return reply["result"]


async def test_rpc_websocket_takes_the_token_three_ways_and_checks_origin(tmp_path: Path) -> None:
    token = new_token()
    with trio.fail_after(TIMEOUT):
        async with node_app(tmp_path, token) as port:
            url = f"ws://127.0.0.1:{port}/rpc"
            origin = ("Origin", f"http://127.0.0.1:{port}")
            for extra, target in (
                ([("Authorization", f"Bearer {token}")], url),
                ([("Cookie", f"{cookie_name(port)}={token}"), origin], url),
                ([origin], f"{url}?token={token}"),
            ):
                async with trio_websocket.open_websocket_url(target, extra_headers=extra) as socket:
                    status = await rpc_call(socket, "node.status")
                    assert isinstance(status, dict) and status["peer_id"].startswith("12D3KooW")
            host = {"Host": f"127.0.0.1:{port}"}
            assert await handshake_status(port, f"/rpc?token={token}", host) == 101
            assert await handshake_status(port, f"/rpc?token={token}", {**host, "Origin": origin[1]}) == 101
            assert await handshake_status(port, "/rpc", host) == 403
            assert await handshake_status(port, f"/rpc?token={new_token()}", host) == 403
            evil = {**host, "Origin": "http://evil.example"}
            assert await handshake_status(port, f"/rpc?token={token}", evil) == 403


async def test_rpc_frames_over_one_mib_close_the_socket_and_leaving_mid_stream_hurts_nothing(
    tmp_path: Path,
) -> None:
    token = new_token()
    headers = [("Authorization", f"Bearer {token}")]
    with trio.fail_after(TIMEOUT):
        async with node_app(tmp_path, token) as port:
            url = f"ws://127.0.0.1:{port}/rpc"
            stream = await open_raw_websocket(port, token)
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError):  # it may close before all is sent
                    await stream.send_all(client_frame("[" + " " * (MAX_FRAME + 10) + "]"))
                data = b""
                while len(data) < 4:
                    chunk = await stream.receive_some(4096)
                    assert chunk, data
                    data += chunk
            assert data[0] == 0x88 and int.from_bytes(data[2:4], "big") == 1009  # close: message too big
            # clients that send requests and vanish (a tab closed: no close frame, answers unread)
            for _ in range(3):
                stream = await open_raw_websocket(port, token)
                await stream.send_all(
                    client_frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe"}))
                )
                for n in range(50):
                    request = {"jsonrpc": "2.0", "id": n + 2, "method": "contacts.list", "params": {}}
                    await stream.send_all(client_frame(json.dumps(request)))
                await stream.aclose()
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as socket:
                assert await rpc_call(socket, "contacts.list", 7) == []


def test_the_redirect_after_the_token_stays_on_this_site() -> None:
    """``/?token=`` redirects to its own path: never to ``//host`` or ``/\\host`` (another site)."""
    for path, location in (
        ("//evil.example/x", "/evil.example/x?lang=ru"),
        ("/\\evil.example", "/%5Cevil.example?lang=ru"),
        ("/", "/?lang=ru"),
    ):
        assert _without_token({"path": path, "query_string": b"token=T&lang=ru"}) == location
