"""How long the web app takes to show a long conversation: a profile with 10,000 messages exchanged
with one contact, ``meshchat app`` serving it, headless Chromium opening the conversation.

Run: python benchmarks/page_load.py [--messages N] [--runs R]

The conversation is written straight into the profile's store (``Storage.outbox_add`` with history
rows only: 10,000 real sends would take minutes and measure the network, not the page): every other
message outgoing (no outbox record, so no status), the rest incoming, bodies of ~60 bytes of
multilingual text. Then ``meshchat app`` runs on the profile as a real process (a real node on
127.0.0.1) and Debian's Chromium (Playwright, ``/usr/bin/chromium``) opens the app once to take the
token cookie, then ``R`` times the address of the conversation (``/#<PeerId>``): each time is from the
start of the navigation until the newest page of messages is in the page (``#messages[data-loaded]``,
which the page sets once ``messages.conversation`` answered and its messages are rendered). The page
asks for the newest 100 only, whatever the length of the conversation, so the time should not grow
with ``N``.

The last line reads ``page_ms=…``: the median of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
#: Seconds the app may take to print its URL, or to stop.
WAIT = 60.0
#: Milliseconds the page may take to show the conversation.
PAGE_WAIT_MS = 60_000
SAMPLES = ("Привет, как дела?", "Рәхим итегез", "Сәлам, дус! 👋", "Grüße aus Zürich", "hello there")


def build_profile(folder: Path, messages: int) -> str:
    """A profile in ``folder`` with one contact and ``messages`` messages with them; their PeerId."""
    from meshchat.contacts import Contacts  # noqa: PLC0415
    from meshchat.identity import KEY_FILE_NAME, Identity, save_identity  # noqa: PLC0415
    from meshchat.store.encrypted import store_key  # noqa: PLC0415
    from meshchat.store.sqlite import STORE_FILE, SqliteStorage  # noqa: PLC0415
    from meshchat.store.storage import HistoryRecord  # noqa: PLC0415
    from meshchat.wire import Invite  # noqa: PLC0415

    folder.mkdir()
    me, friend = Identity(bytes([21]) * 32), Identity(bytes([22]) * 32)
    save_identity(folder / KEY_FILE_NAME, me, None)
    (folder / "profile.json").write_text(json.dumps({"name": "Reader"}), encoding="utf-8")
    Contacts(folder).add(Invite.create(friend, name="Writer").to_text())
    now_ms = int(time.time() * 1000)
    records = [
        HistoryRecord(
            peer=friend.public.ed25519,
            message_id=n.to_bytes(32, "big"),
            outgoing=n % 2 == 0,
            body=f"{n}: {SAMPLES[n % len(SAMPLES)]} {'·' * (n % 40)}".encode(),
            sent_at_ms=now_ms - (messages - n) * 60_000,
            number=0 if n % 2 == 0 else n,
        )
        for n in range(1, messages + 1)
    ]
    storage = SqliteStorage(folder / STORE_FILE, key=store_key(me))
    try:
        for start in range(0, len(records), 1000):  # transactions of 1,000 rows
            storage.outbox_add([], history=records[start : start + 1000])
    finally:
        storage.close()
    return friend.public.peer_id


def _read_url(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + WAIT
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("meshchat app printed no URL in time")
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f"meshchat app ended with status {process.wait()}")
            line += byte
    return line.decode("ascii").strip()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(WAIT)
    if process.stdout is not None:
        process.stdout.close()


def measure_page_ms(messages: int = 10_000, *, runs: int = 5) -> float:
    """The median ms, over ``runs`` loads, from navigation to the conversation of ``messages``
    messages shown (module docstring)."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "reader"
        peer = build_profile(profile, messages)
        env = {**os.environ, "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
        command = [sys.executable, "-m", "meshchat", "app", "--profile", str(profile), "--no-open"]
        command += ["--listen", "/ip4/127.0.0.1/tcp/0"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            url = _read_url(process)
            base = url.split("/?", 1)[0]
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page()
                    page.set_default_timeout(PAGE_WAIT_MS)
                    page.goto(url)  # takes the token cookie
                    page.wait_for_selector("body[data-ready=true]")
                    times = []
                    for _ in range(runs):
                        page.goto("about:blank")
                        started = time.perf_counter()
                        page.goto(f"{base}/#{peer}")
                        page.wait_for_selector("#messages[data-loaded=true]", state="attached")
                        times.append((time.perf_counter() - started) * 1000)
                        shown = page.locator("#message-list li").count()
                        if shown != min(100, messages):
                            raise AssertionError(f"{shown} messages shown, expected {min(100, messages)}")
                finally:
                    browser.close()
        finally:
            _stop(process)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"page_ms={measure_page_ms(args.messages, runs=args.runs):.1f}")


if __name__ == "__main__":
    main()
