"""An app process for the crash-safety tests: a sender that queues N messages (with idempotency
refs, so running it again after a crash sends nothing twice) and waits until a mailbox stored them
all, or a recipient that syncs until its inbox holds N messages. Prints one JSON object per line.

    python tests/crash_peer.py send PROFILE MAILBOX_ADDR RECIPIENT_PEER_ID N
    python tests/crash_peer.py receive PROFILE MAILBOX_ADDR N [AFTER]
    python tests/crash_peer.py track PROFILE MAILBOX_ADDR RECIPIENT_PEER_ID N
    python tests/crash_peer.py follow PROFILE MAILBOX_ADDR N [AFTER]

Every node here opens with ``stamps=False``: the recipient is a stranger to the sender (a bare
PublicIdentity) and 1,000 stamps at the default cost would take minutes of CPU; crash safety, not
stamps, is what these processes test (``tests/test_stamps.py`` tests stamps).

The recipient prints each message once across its runs: started again with the last inbox number
it printed (``AFTER``), its event stream replays the messages committed after that one first.

``track`` and ``follow`` are the catch-up benchmark's sender and recipient
(``benchmarks/bench_catch_up.py``): the default ``StoreConfig`` (but one mailbox copy), so the
real pacing is measured, and both run until killed. ``track`` queues N messages like ``send``, then
reports its outbox as it changes (``progress``: counts by status, whether the mailbox is connected,
syncs done) until every message is ``delivered`` (``all_delivered``), and every ``REPORT_INTERVAL``
seconds while it waits; ``follow`` is ``receive`` that stays up after ``done`` (its receipts must
still reach the sender).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import trio

from meshchat.identity import PublicIdentity
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
FAST = StoreConfig(retry_initial=0.5, sync_interval=0.5, mailbox_copies=1)
DONE = {OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ}
#: The catch-up benchmark's pacing: the defaults, with one mailbox (it runs one).
DEFAULT_PACE = StoreConfig(mailbox_copies=1)
#: Seconds between ``progress`` lines while nothing changes (so a stall shows what is awaited).
REPORT_INTERVAL = 2.0


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def send(profile: Path, mailbox: str, recipient: str, count: int) -> None:
    to = PublicIdentity.from_peer_id(recipient)
    async with Node.open(
        profile, listen=LOCAL, mailboxes=[mailbox], store_config=FAST, dht=False, stamps=False
    ) as node:
        say("started")
        for i in range(count):
            await node.send(to, f"m{i}", ref=f"m{i}")
            say("queued", i=i)
        await node.wait_for(
            lambda: len(o := node.outbox(count + 1)) == count and all(r.status in DONE for r in o)
        )
        say("all_stored")


async def receive(profile: Path, mailbox: str, count: int, after: int) -> None:
    """Print every message after inbox number ``after`` (the last one this app printed before it was
    killed) until the inbox's ``count``-th: the event stream replays what was committed but not yet
    printed, then goes on live."""
    async with Node.open(
        profile,
        listen=LOCAL,
        mailboxes=[mailbox],
        store_config=FAST,
        dht=False,
        events_after=after,
        stamps=False,
    ) as node:
        say("started")
        if after < count:
            async for event in node.events():
                if isinstance(event, DirectMessage):
                    say("direct", body=event.body.decode(), number=event.number, seq=event.seq)
                    if event.number >= count:
                        break
        say("done", inbox=len(node.inbox(limit=count + 1)))


async def track(profile: Path, mailbox: str, recipient: str, count: int) -> None:
    """Queue ``count`` messages (refs: again after a restart is a no-op) and report the outbox."""
    to = PublicIdentity.from_peer_id(recipient)
    box = mailbox.rsplit("/p2p/", 1)[1]
    async with Node.open(
        profile, listen=LOCAL, mailboxes=[mailbox], store_config=DEFAULT_PACE, dht=False, stamps=False
    ) as node:
        say("started", t=time.time())
        for i in range(count):
            await node.send(to, f"m{i}", ref=f"m{i}")
        say("queued", n=count, t=time.time())

        def state() -> tuple[tuple[tuple[str, int], ...], bool, int, int]:
            stats = node.store_statistics()
            pending = tuple((s, n) for s, n in sorted(stats.pending.items()) if n)
            return (pending, box in node.mailboxes, stats.syncs, stats.receipts)

        last: tuple[object, ...] = ()
        stored = delivered = False
        while True:
            now = state()
            pending = dict(now[0])
            if now != last:
                say(
                    "progress",
                    t=time.time(),
                    pending=pending,
                    delivered=count - sum(pending.values()),
                    mailbox=now[1],
                    syncs=now[2],
                    receipts=now[3],
                    unreachable=bool(node.unreachable_mailboxes),
                )
                last = now
            if not stored and not pending.get("queued") and not pending.get("relayed"):
                stored = True
                say("all_stored", t=time.time())
            if not delivered and not pending:
                delivered = True
                say("all_delivered", t=time.time())
            with trio.move_on_after(REPORT_INTERVAL):
                await node.wait_for(lambda before=now: state() != before)
            if state() == now:  # a quiet interval: say what is still awaited
                last = ()


async def follow(profile: Path, mailbox: str, count: int, after: int) -> None:
    """``receive`` with the default pacing, staying up after ``done`` until killed."""
    async with Node.open(
        profile,
        listen=LOCAL,
        mailboxes=[mailbox],
        store_config=DEFAULT_PACE,
        dht=False,
        events_after=after,
        stamps=False,
    ) as node:
        say("started", t=time.time())
        if after < count:
            async for event in node.events():
                if isinstance(event, DirectMessage):
                    say("direct", number=event.number, t=time.time())
                    if event.number >= count:
                        break
        say("done", inbox=len(node.inbox(limit=count + 1)), t=time.time())
        await trio.sleep_forever()


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    role, profile, mailbox, *rest = sys.argv[1:]
    if role == "send":
        trio.run(send, Path(profile), mailbox, rest[0], int(rest[1]))
    elif role == "track":
        trio.run(track, Path(profile), mailbox, rest[0], int(rest[1]))
    elif role == "follow":
        trio.run(follow, Path(profile), mailbox, int(rest[0]), int(rest[1]) if len(rest) > 1 else 0)
    else:
        trio.run(receive, Path(profile), mailbox, int(rest[0]), int(rest[1]) if len(rest) > 1 else 0)


if __name__ == "__main__":
    main()
