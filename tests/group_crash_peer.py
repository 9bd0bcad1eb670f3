"""An app process for the group crash-safety tests (``tests/test_group_crash.py``): a group's admin
that sends N group messages, or a member that prints each group message once. One JSON object per line.

    python tests/group_crash_peer.py admin PROFILE MAILBOX_ADDR MEMBER_PEER_ID N
    python tests/group_crash_peer.py member PROFILE MAILBOX_ADDR N [AFTER]

``admin`` creates the group ``crash`` with the member (or finds it, started again after a crash),
sends ``m0`` .. ``m{N-1}`` with refs (sending again after a crash is a no-op: the ref returns the
first message), waits until a mailbox stored every one of them and every control message (the
invitation, the chain handout) is stored or delivered (``all_stored``), then stays up until killed.

``member`` joins the group when invited (or finds it joined), then prints every group message after
history number ``AFTER`` (the last one it printed before it was killed): first what the history holds,
then what comes live. It resumes the way the API tells an application to: a ``GroupMessage`` event
is a wake-up, the messages printed are read from ``history(after=last printed)``, so a number is
printed once even when the event and the history read overlap or an event was missed. Each event it
receives is also reported (``event``) with its number and message id, so the test can check that the
core never hands one message out under two numbers. ``done`` once the history holds N messages and
all were printed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import trio

from meshchat.groups.events import GroupMessage, MemberStatus
from meshchat.identity import PublicIdentity
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
FAST = StoreConfig(retry_initial=0.5, sync_interval=0.5, mailbox_copies=1)
DONE = {OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ}
GROUP = "crash"
#: History records read per call.
PAGE = 100
#: Seconds between two looks at the outbox while no event comes.
RECHECK = 0.5
#: Seconds without news after which a process says what it still waits for (``waiting``): a stall
#: shows its cause in the test's logs.
REPORT = 5.0


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def admin(profile: Path, mailbox: str, member: str, count: int) -> None:
    async with Node.open(profile, listen=LOCAL, mailboxes=[mailbox], store_config=FAST, dht=False) as node:
        known = [g for g in node.groups.all() if g.name == GROUP]
        if known:
            group = known[0].group_id
        else:
            group = node.groups.create(GROUP, [PublicIdentity.from_peer_id(member)]).group_id
        say("started", group=group.hex(), again=bool(known))
        ids: list[bytes] = []
        for i in range(count):
            ids.append(node.groups.send(group, f"m{i}", ref=f"m{i}").message_id)
            say("queued", i=i)
            await trio.lowlevel.checkpoint()  # let the network work between sends

        def all_stored() -> bool:
            statuses = [node.groups.status(mid) for mid in ids]
            controls = node.outbox(10 * count)
            return all(s is not None and s.stored for s in statuses) and all(
                r.status in DONE for r in controls
            )

        events = node.events()
        quiet = 0.0
        while not all_stored():  # looked at again on each event (mailboxes storing: GroupStatus)
            with trio.move_on_after(RECHECK) as scope:  # and now and then: an outbox move is no event
                await events.receive()
            quiet = quiet + RECHECK if scope.cancelled_caught else 0.0
            if quiet >= REPORT:
                quiet = 0.0
                unstored = sum(1 for mid in ids if not (s := node.groups.status(mid)) or not s.stored)
                pending = [r.status.value for r in node.outbox(10 * count) if r.status not in DONE]
                say("waiting", unstored=unstored, controls=pending, stats=node.groups.statistics())
        say("all_stored", outbox=len(node.outbox(10 * count)))
        await trio.sleep_forever()


async def member(profile: Path, mailbox: str, count: int, after: int) -> None:
    async with Node.open(profile, listen=LOCAL, mailboxes=[mailbox], store_config=FAST, dht=False) as node:
        say("started")
        events = node.events()
        group = None
        while group is None:
            for view in node.groups.all():
                if view.name == GROUP and view.status is MemberStatus.INVITED:
                    node.groups.join(view.group_id)
                    say("joined")
                if view.name == GROUP and view.status in (MemberStatus.INVITED, MemberStatus.JOINED):
                    group = view.group_id
            if group is None:
                await events.receive()  # an invitation, or anything else: look again
        last = after

        def catch_up() -> None:
            nonlocal last
            while page := node.groups.history(group, after=last, limit=PAGE):
                for record in page:
                    say("group", number=record.number, body=record.body.decode(), mid=record.message_id.hex())
                    last = record.number

        def finished() -> bool:
            held = node.groups.history(group, after=0, limit=count + 1)
            return len(held) >= count and last >= held[-1].number

        catch_up()
        while not finished():
            with trio.move_on_after(REPORT) as scope:
                event = await events.receive()
            if scope.cancelled_caught:
                held = len(node.groups.history(group, after=0, limit=count + 1))
                say("waiting", held=held, last=last, stats=node.groups.statistics())
                continue
            if isinstance(event, GroupMessage) and event.group_id == group:
                say("event", number=event.number, mid=event.message_id.hex())
                if event.number > last:
                    catch_up()
        say("done", held=len(node.groups.history(group, after=0, limit=count + 1)))


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    role, profile, mailbox, *rest = sys.argv[1:]
    if role == "admin":
        trio.run(admin, Path(profile), mailbox, rest[0], int(rest[1]))
    else:
        trio.run(member, Path(profile), mailbox, int(rest[0]), int(rest[1]) if len(rest) > 1 else 0)


if __name__ == "__main__":
    main()
