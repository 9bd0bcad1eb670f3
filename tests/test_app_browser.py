"""Two people chat through the web app in a real browser: two ``meshchat app`` processes (two nodes on
127.0.0.1), headless Debian Chromium driven by Playwright, one browser context (cookie jar) per person.

They add each other (by invite text, and by a picture of the QR code), write both ways, watch the
status mark reach delivered without reloading, compare safety numbers and verify, block and unblock;
one person has two windows open at once; a window closed mid-stream leaves the app working. A
screenshot of each screen goes to ``$MESHCHAT_ARTEFACTS/app/``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import segno
import trio
from app_harness import CHROMIUM, AppProcess, app_process, artefacts_dir, named_profile

from meshchat.app.auth import new_token
from meshchat.app.methods import open_methods
from meshchat.app.server import GRACEFUL_TIMEOUT, serve_app
from meshchat.identity import load_identity, safety_number
from meshchat.node import KEY_FILE, Node

if os.environ.get("CI") or Path(CHROMIUM).exists():
    # In CI (.ci/run installs chromium and playwright) a missing browser fails the run, never skips it.
    import playwright.sync_api as playwright_sync
else:  # pragma: no cover (a developer's machine without Debian's chromium: said in pytest -ra)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

#: Milliseconds any one wait in the browser may take (two nodes on a loaded 2-core machine).
WAIT_MS = 45_000
DONE = re.compile(r"^(delivered|read)$")


def open_page(context: playwright_sync.BrowserContext, app: AppProcess) -> playwright_sync.Page:
    """A window on the app, logged in by its URL's token, ready (connected and loaded)."""
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app.url)
    assert "token=" not in page.url  # the token went into a cookie and left the address bar
    page.wait_for_selector("body[data-ready=true]")
    return page


def own_invite(page: playwright_sync.Page, shot: Path | None = None) -> str:
    page.click("#open-invite")
    page.wait_for_function("() => document.querySelector('#invite-text').value.startsWith('MESHCHAT:')")
    page.wait_for_function("() => document.querySelector('#invite-qr').naturalWidth > 0")
    text = page.input_value("#invite-text")
    if shot is not None:
        page.screenshot(path=str(shot))
    page.click("#invite-dialog .close")
    return text


def contact_item(page: playwright_sync.Page, peer_id: str) -> playwright_sync.Locator:
    return page.locator(f"#contacts li[data-peer='{peer_id}']")


def send(page: playwright_sync.Page, text: str) -> playwright_sync.Locator:
    """Type and send ``text`` in the open conversation; its message element."""
    page.fill("#compose-text", text)
    page.press("#compose-text", "Enter")
    message = page.locator("#message-list li.out", has_text=text)
    message.wait_for()
    return message


#: A JSON-RPC call on a socket of the page's own (authenticated by its cookie, like the app's).
RPC_FROM_PAGE = """(request) => new Promise((resolve, reject) => {
  const socket = new WebSocket(`ws://${location.host}/rpc`);
  socket.onopen = () => socket.send(JSON.stringify(request));
  socket.onmessage = (event) => {
    const reply = JSON.parse(event.data);
    if (reply.id === request.id) { socket.close(); resolve(reply); }
  };
  socket.onerror = () => reject(new Error("the socket failed"));
})"""


def rpc_call(page: playwright_sync.Page, method: str, params: dict[str, object]) -> dict[str, object]:
    """One JSON-RPC call on the app's ``/rpc``, as any client holding the token could make it."""
    reply = page.evaluate(RPC_FROM_PAGE, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert "result" in reply, reply
    result: dict[str, object] = reply["result"]
    return result


def peer_of(profile: Path) -> tuple[str, object]:
    identity = load_identity(profile / KEY_FILE, None)
    return identity.public.peer_id, identity.public


def test_two_people_chat_in_the_browser(tmp_path: Path) -> None:
    shots = artefacts_dir()
    alice_dir = named_profile(tmp_path, "Alice", 11)
    bob_dir = named_profile(tmp_path, "Bob", 12)
    alice_peer, alice_public = peer_of(alice_dir)
    bob_peer, bob_public = peer_of(bob_dir)
    with (
        app_process(alice_dir, tmp_path / "alice.log") as alice_app,
        app_process(bob_dir, tmp_path / "bob.log") as bob_app,
        playwright_sync.sync_playwright() as driver,
    ):
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            alice_context = browser.new_context(viewport={"width": 1100, "height": 720})
            bob_context = browser.new_context(viewport={"width": 1100, "height": 720})
            alice = open_page(alice_context, alice_app)
            bob = open_page(bob_context, bob_app)
            assert alice.text_content("#me") == "Alice"
            assert alice.locator("#no-contacts").is_visible()

            # Bob adds Alice from her invite's text
            alice_invite = own_invite(alice, shots / "invite_qr.png")
            bob.click("#open-add")
            bob.fill("#add-invite", alice_invite)
            bob.screenshot(path=str(shots / "add_contact.png"))
            bob.click("#add-submit")
            contact_item(bob, alice_peer).wait_for()
            assert contact_item(bob, alice_peer).get_attribute("data-verification") == "unverified"

            # Alice adds Bob from a picture of his invite's QR code, with her own name for him
            qr_png = tmp_path / "bob-invite.png"
            segno.make(own_invite(bob), error="l").save(str(qr_png), kind="png", scale=6)
            alice.click("#open-add")
            alice.set_input_files("#add-qr", str(qr_png))
            alice.fill("#add-petname", "Bobby")
            alice.click("#add-submit")
            contact_item(alice, bob_peer).wait_for()
            assert contact_item(alice, bob_peer).locator(".name").text_content() == "Bobby"

            # Alice writes; the mark moves to delivered (or read) live, and Bob sees the text
            contact_item(alice, bob_peer).locator("button").click()
            hello = send(alice, "Привет, Bob! <b>not bold</b>")
            hello.locator(".status[data-status=delivered], .status[data-status=read]").wait_for()
            contact_item(bob, alice_peer).locator("button").click()
            received = bob.locator("#message-list li.in", has_text="Привет, Bob!")
            received.wait_for()
            assert received.locator(".text").inner_html() == "Привет, Bob! &lt;b&gt;not bold&lt;/b&gt;"

            # Bob answers; Alice, in the conversation, sees it arrive without reloading
            answer = send(bob, "Hi Alice 👋")
            alice.locator("#message-list li.in", has_text="Hi Alice 👋").wait_for()
            answer.locator(".status[data-status=delivered], .status[data-status=read]").wait_for()
            alice.screenshot(path=str(shots / "conversation.png"))

            # both see the same safety number; Alice marks Bob verified
            alice.click("#open-safety")
            number = alice.locator("#safety-number")
            number.wait_for()
            expected = safety_number(alice_public, bob_public)  # type: ignore[arg-type]
            assert re.sub(r"\D", "", number.text_content() or "") == re.sub(r"\D", "", expected)
            alice.wait_for_function("() => document.querySelector('#safety-qr').naturalWidth > 0")
            alice.screenshot(path=str(shots / "safety_number.png"))
            alice.click("#safety-verify")
            alice.wait_for_selector("#safety-dialog[data-verification=verified]")
            alice.click("#safety-dialog .close")
            alice.wait_for_selector(f"#contacts li[data-peer='{bob_peer}'][data-verification=verified]")
            assert alice.text_content("#chat-verification") == "verified"

            # Alice renames him; an empty name goes back to the one his invite gives
            alice.click("#open-rename")
            assert alice.input_value("#rename-petname") == "Bobby"
            alice.fill("#rename-petname", "Robert")
            alice.click("#rename-save")
            alice.wait_for_selector(f"#contacts li[data-peer='{bob_peer}'] .name:text-is('Robert')")
            assert alice.text_content("#chat-name") == "Robert"
            alice.click("#open-rename")
            alice.fill("#rename-petname", "")
            alice.click("#rename-save")
            alice.wait_for_selector(f"#contacts li[data-peer='{bob_peer}'] .name:text-is('Bob')")

            # Alice has a second window open on her profile: both show what arrives
            second = open_page(alice_context, alice_app)
            contact_item(second, bob_peer).locator("button").click()
            second.locator("#message-list li.in", has_text="Hi Alice 👋").wait_for()
            send(bob, "to both windows")
            alice.locator("#message-list li.in", has_text="to both windows").wait_for()
            second.locator("#message-list li.in", has_text="to both windows").wait_for()
            second.screenshot(path=str(shots / "contacts.png"))

            # a window closed while messages stream in does not hurt the app
            for n in range(5):
                bob.fill("#compose-text", f"stream {n}")
                bob.press("#compose-text", "Enter")
            second.close()
            alice.locator("#message-list li.in", has_text="stream 4").wait_for()
            send(alice, "still here").locator(
                ".status[data-status=delivered], .status[data-status=read]"
            ).wait_for()

            # Alice makes a group with Bob (through her app's /rpc, as any client could): Bob's list shows it
            created = rpc_call(alice, "groups.create", {"name": "Family", "members": [bob_peer]})
            assert created["name"] == "Family"
            bob.locator("#groups li", has_text="Family").wait_for()
            assert not bob.locator("#no-groups").is_visible()

            # Bob sends Alice a file: her notices name it as it arrives
            (tmp_path / "plan.txt").write_text("the plan\n", encoding="utf-8")
            rpc_call(bob, "files.send", {"to": alice_peer, "path": str(tmp_path / "plan.txt")})
            alice.locator("#notices li.file", has_text="plan.txt").wait_for()
            assert alice.text_content("#notices li.file") == "Bob sent a file: plan.txt"

            # Bob blocks Alice, then unblocks her
            bob.click("#block")
            bob.wait_for_selector(f"#contacts li[data-peer='{alice_peer}'][data-blocked=true]")
            assert bob.locator("#blocked-note").is_visible()
            assert bob.locator("#unblock").is_visible()
            bob.click("#unblock")
            bob.wait_for_selector(f"#contacts li[data-peer='{alice_peer}'][data-blocked=false]")
            assert not bob.locator("#blocked-note").is_visible()
        finally:
            browser.close()
    assert alice_app.process.returncode == 0, alice_app.log.read_text()
    assert bob_app.process.returncode == 0, bob_app.log.read_text()


def test_a_long_conversation_opens_with_the_newest_page_and_pages_back_on_scroll(tmp_path: Path) -> None:
    """250 messages: the newest 100 first, then 100 more each time the view reaches its top."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import page_load  # noqa: PLC0415

    profile = tmp_path / "reader"
    peer = page_load.build_profile(profile, 250)
    with app_process(profile, tmp_path / "reader.log") as app, playwright_sync.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = open_page(browser.new_context(), app)
            contact_item(page, peer).locator("button").click()
            page.wait_for_selector("#messages[data-loaded=true]", state="attached")
            items = page.locator("#message-list li")
            assert items.count() == 100
            assert (items.last.locator(".text").text_content() or "").startswith("250: ")
            assert (items.first.locator(".text").text_content() or "").startswith("151: ")
            for shown in (200, 250):
                page.locator("#messages").evaluate("(view) => { view.scrollTop = 0; }")
                page.wait_for_function(
                    f"() => document.querySelectorAll('#message-list li').length === {shown}"
                )
            assert (items.first.locator(".text").text_content() or "").startswith("1: ")
            assert page.text_content("#history-state") == "This is the beginning of the conversation."
            cursors = [int(c) for c in items.evaluate_all("(all) => all.map((li) => li.dataset.cursor)")]
            assert cursors == sorted(cursors) and len(set(cursors)) == 250
            # an outgoing message without an outbox record here (sent from another device) has an empty
            # mark; incoming ones have none
            assert items.nth(1).locator(".status").get_attribute("data-status") == ""
            assert items.nth(1).locator(".status").text_content() == ""
            assert items.nth(0).locator(".status").count() == 0
        finally:
            browser.close()


async def test_the_page_reconnects_when_the_server_comes_back(tmp_path: Path) -> None:
    """The app stops while a page is open (the page says it is reconnecting) and starts again on the
    same port: the page reconnects by itself, reloads, and works."""
    folder = named_profile(tmp_path, "Dana", 41)
    token = new_token()
    async with (
        Node.open(folder, listen=["/ip4/127.0.0.1/tcp/0"], dht=False) as node,
        open_methods(node) as methods,
        trio.open_nursery() as nursery,
    ):
        server = trio.CancelScope()

        served: list[float] = []  # how long each stop took, from the cancel to serve_app's return

        async def serve(port: int = 0, *, task_status: trio.TaskStatus[int]) -> None:
            nonlocal server
            with trio.CancelScope() as server:
                try:
                    await serve_app(methods, token=token, port=port, task_status=task_status)
                finally:
                    served.append(trio.current_time())

        port: int = await nursery.start(serve)
        stopped_at: list[float] = []

        def stop_server() -> None:
            stopped_at.append(trio.current_time())
            server.cancel()

        async def restart() -> None:
            await nursery.start(serve, port)

        def browse() -> None:
            with playwright_sync.sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page()
                    page.set_default_timeout(WAIT_MS)
                    page.goto(f"http://127.0.0.1:{port}/?token={token}")
                    page.wait_for_selector("body[data-ready=true]")
                    trio.from_thread.run_sync(stop_server)
                    page.wait_for_selector("#connection[data-state=reconnecting]")
                    assert page.locator("#banner").is_visible()
                    trio.from_thread.run(restart)
                    page.wait_for_selector("#connection[data-state=connected]")
                    page.wait_for_selector("body[data-ready=true]")
                    assert not page.locator("#banner").is_visible()
                    page.click("#open-invite")
                    page.wait_for_function("() => document.querySelector('#invite-text').value.length > 0")
                finally:
                    browser.close()

        with trio.fail_after(120):
            await trio.to_thread.run_sync(browse)
        # the open page did not hold the stop up for the grace period: its socket was closed at once
        assert served[0] - stopped_at[0] < GRACEFUL_TIMEOUT / 2
        nursery.cancel_scope.cancel()


def test_a_changed_key_is_shown_refused_and_accepted(tmp_path: Path) -> None:
    """A contact whose key changed: a warning, a send refused with the reason, then the safety number
    screen's "accept the new key" and "mark as verified" buttons."""
    from meshchat.contacts import Contacts  # noqa: PLC0415
    from meshchat.identity import Identity  # noqa: PLC0415
    from meshchat.wire import Invite  # noqa: PLC0415

    profile = named_profile(tmp_path, "Erin", 51)
    contacts = Contacts(profile)
    contacts.add(Invite.create(Identity(bytes([52]) * 32), name="Frank").to_text())
    new_key = Identity(bytes([53]) * 32)
    contacts.add(Invite.create(new_key, name="Frank").to_text(), replace_key=True)
    frank = new_key.public.peer_id
    with app_process(profile, tmp_path / "erin.log") as app, playwright_sync.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = open_page(browser.new_context(), app)
            item = contact_item(page, frank)
            assert item.get_attribute("data-verification") == "changed"
            assert item.locator(".badge.changed").text_content() == "key changed"
            item.locator("button").click()
            warning = page.locator("#changed-warning")
            assert warning.is_visible()
            assert "Frank's key has changed" in (warning.text_content() or "")
            page.fill("#compose-text", "are you really Frank?")
            page.press("#compose-text", "Enter")
            page.locator(".toast.error").wait_for()
            assert page.locator("#message-list li").count() == 0
            assert page.input_value("#compose-text") == "are you really Frank?"  # the words are kept
            page.click("#open-safety")
            page.wait_for_selector("#safety-dialog[data-verification=changed]")
            assert (
                page.locator("#safety-accept").is_visible()
                and not page.locator("#safety-verify").is_visible()
            )
            page.click("#safety-accept")
            page.wait_for_selector("#safety-dialog[data-verification=unverified]")
            page.click("#safety-verify")
            page.wait_for_selector("#safety-dialog[data-verification=verified]")
            page.click("#safety-dialog .close")
            assert item.get_attribute("data-verification") == "verified"
            assert not warning.is_visible()
        finally:
            browser.close()


EVIL_PAGE = """<!doctype html><title>another site</title><body><script>
const app = new URLSearchParams(location.search).get("app");
const results = {};
function done(key, value) {
  results[key] = value;
  if (Object.keys(results).length === 2) document.body.dataset.results = JSON.stringify(results);
}
const socket = new WebSocket(`ws://${app}/rpc`);
socket.onopen = () => done("socket", "open");
socket.onerror = () => done("socket", "refused");
fetch(`http://${app}/i18n.json`, { credentials: "include" })
  .then((r) => r.text()).then((text) => done("fetch", text.slice(0, 40)), () => done("fetch", "blocked"));
</script></body>"""


def test_another_site_in_the_same_browser_cannot_use_the_app(tmp_path: Path) -> None:
    """A page from another origin on this machine (127.0.0.1, another port: the same *site*, so the
    browser does send the SameSite=Strict cookie) cannot open ``/rpc`` (Origin check) nor read pages."""
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = EVIL_PAGE.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    profile = named_profile(tmp_path, "Gina", 61)
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    serving = threading.Thread(target=evil.serve_forever, daemon=True)
    serving.start()
    try:
        with app_process(profile, tmp_path / "gina.log") as app, playwright_sync.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                context = browser.new_context()
                open_page(context, app)  # the user is logged in: the browser holds the cookie
                page = context.new_page()
                page.set_default_timeout(WAIT_MS)
                host = app.base.removeprefix("http://")
                page.goto(f"http://127.0.0.1:{evil.server_address[1]}/?app={host}")
                page.wait_for_selector("body[data-results]", state="attached")
                results = page.evaluate("() => JSON.parse(document.body.dataset.results)")
                assert results == {"socket": "refused", "fetch": "blocked"}
            finally:
                browser.close()
    finally:
        evil.shutdown()
        evil.server_close()
        serving.join(WAIT_MS / 1000)
