"""An app process for the crash-safety tests: a sender that queues N messages (with idempotency
refs, so running it again after a crash sends nothing twice) and waits until a mailbox stored them
all, or a recipient that syncs until its inbox holds N messages. Prints one JSON object per line.

    python tests/crash_peer.py send PROFILE MAILBOX_ADDR RECIPIENT_PEER_ID N
    python tests/crash_peer.py receive PROFILE MAILBOX_ADDR N [AFTER]

The recipient prints each message once across its runs: started again with the last inbox number
it printed (``AFTER``), its event stream replays the messages committed after that one first.
"""

from __future__ import annotations

import json
import logging
import sys
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


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def send(profile: Path, mailbox: str, recipient: str, count: int) -> None:
    to = PublicIdentity.from_peer_id(recipient)
    async with Node.open(profile, listen=LOCAL, mailboxes=[mailbox], store_config=FAST, dht=False) as node:
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
        profile, listen=LOCAL, mailboxes=[mailbox], store_config=FAST, dht=False, events_after=after
    ) as node:
        say("started")
        if after < count:
            async for event in node.events():
                if isinstance(event, DirectMessage):
                    say("direct", body=event.body.decode(), number=event.number, seq=event.seq)
                    if event.number >= count:
                        break
        say("done", inbox=len(node.inbox(limit=count + 1)))


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    role, profile, mailbox, *rest = sys.argv[1:]
    if role == "send":
        trio.run(send, Path(profile), mailbox, rest[0], int(rest[1]))
    else:
        trio.run(receive, Path(profile), mailbox, int(rest[0]), int(rest[1]) if len(rest) > 1 else 0)


if __name__ == "__main__":
    main()
