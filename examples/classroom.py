"""A teacher and 30 students on 127.0.0.1, in one process: the class group "Class 7B", where everyone
may post, and "7B announcements", where only admins (the teacher) post.

Every student's node is connected to the teacher's only (a star, as in a classroom on one Wi-Fi with
the teacher's laptop in the middle). Gossip flows only through nodes that joined a topic, so the
teacher's node relays the inbox shards (where key handouts and receipts travel, 1:1) and keeps
every student in its gossip mesh (gossipsub's default mesh holds 6 to 12 peers). Nodes open with an
identity only and no DHT, to keep 31 of them light. One envelope per group message, whatever the
size of the class; members' receipts come back batched (one per member every ``RECEIPT_DELAY`` s).

Run: python examples/classroom.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from meshchat import Identity, Node
from meshchat.crypto import epoch_of
from meshchat.errors import NotAuthorized
from meshchat.gossip import GossipConfig, ScoreParams
from meshchat.groups.events import GroupInvited, GroupMessage, GroupStatus
from meshchat.groups.seal import group_tag, group_topic
from meshchat.node import NodeEvent
from meshchat.store.messenger import StoreConfig

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
STUDENTS = 30
WAIT = 90.0  # seconds any one step may take before the example gives up (a slow CI machine)
FAST_RETRY = StoreConfig(retry_initial=0.5)  # resend unacknowledged control messages quickly
#: The teacher's node keeps the whole class in its mesh (it forwards what each student posts).
HUB = GossipConfig(d=STUDENTS, d_lo=4, d_hi=STUDENTS + 8)
#: Gossipsub's peer scoring takes many peers on one IP address for a Sybil attack (a penalty beyond
#: 10, and a disconnection soon after): here the whole class is on 127.0.0.1.
ONE_ADDRESS = ScoreParams(ip_colocation_factor_threshold=STUDENTS + 1)


class Log:
    """Every event of every node, as (node name, event), and a way to wait for one to show up."""

    def __init__(self) -> None:
        self.events: list[tuple[str, NodeEvent]] = []
        self._changed = trio.Event()

    async def collect(self, name: str, node: Node) -> None:
        async for event in node.events():
            self.events.append((name, event))
            self._changed.set()
            self._changed = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT):
            while not condition():
                await self._changed.wait()

    def who_got(self, text: str) -> set[str]:
        """The nodes that received group message ``text``."""
        return {n for n, e in self.events if isinstance(e, GroupMessage) and e.body == text.encode()}


async def wait_for_mesh(hub: Node, members: list[Node], topic: str) -> None:
    """Return once ``hub`` and each of ``members`` are in each other's gossip mesh for ``topic`` (no
    mailbox here: a message forwarded before a member's link to the hub formed would miss it)."""
    with trio.fail_after(WAIT):
        await meshed(hub, {m.peer_id for m in members}, topic)
        for member in members:
            await meshed(member, {hub.peer_id}, topic)


async def meshed(node: Node, peers: set[str], topic: str) -> None:
    """Return once ``peers`` are all in ``node``'s gossip mesh for ``topic``."""
    await node.wait_for(lambda: peers <= node.driver.router.mesh.get(topic, set()))


async def lesson(teacher: Node, students: dict[str, Node], log: Log, started: float) -> None:
    """Both groups, an announcement, a refused post, a question, the announcement's status."""

    def elapsed() -> str:
        return f"({time.monotonic() - started:.1f} s)"

    class_list = set(students)
    # 1. The teacher creates both groups; every student accepts both invitations.
    keys = [s.identity.public for s in students.values()]
    klass = teacher.groups.create("Class 7B", keys)
    news = teacher.groups.create("7B announcements", keys, admins_only=True)
    await log.until(lambda: sum(isinstance(e, GroupInvited) for _, e in log.events) == 2 * STUDENTS)
    for student in students.values():
        for group in (klass, news):
            student.groups.join(group.group_id)
    day = epoch_of(teacher.groups.driver.now())
    for group in (klass, news):
        await wait_for_mesh(teacher, list(students.values()), group_topic(group_tag(group.group_id, day)))
    admins_only = students["student 01"].groups.members(news.group_id).admins_only
    print(
        f"all {STUDENTS} students joined {klass.name!r} and {news.name!r} (admins only: {admins_only})",
        elapsed(),
    )

    # 2. An announcement reaches every student.
    announcement = "Maths test on Friday: chapters 3 and 4"
    sent = teacher.groups.send(news.group_id, announcement)
    await log.until(lambda: class_list <= log.who_got(announcement))
    got = log.who_got(announcement) & class_list
    print(
        f"teacher in {news.name!r}: {announcement} -> received by {len(got)} of {STUDENTS} students",
        elapsed(),
    )

    # 3. A student may not post there: refused before anything is sent (and every member's node
    #    would drop such a post, should a modified app send one anyway).
    try:
        students["student 07"].groups.send(news.group_id, "no test on Friday!")
    except NotAuthorized as exc:
        print(f"student 07 tried to post in {news.name!r}: NotAuthorized: {exc}")
    else:
        raise AssertionError("a student's post in the announcements group was not refused")

    # 4. In the class group everyone may post: a question reaches the teacher and the others.
    question = "Does chapter 4 include the exercises on page 52?"
    students["student 12"].groups.send(klass.group_id, question)
    others = class_list - {"student 12"}
    await log.until(lambda: {"teacher", *others} <= log.who_got(question))
    got = log.who_got(question)
    print(
        f"student 12 in {klass.name!r}: {question} -> received by the teacher: {'teacher' in got}, "
        f"and {len(got & others)} of {len(others)} other students {elapsed()}"
    )

    # 5. The students' receipts come back batched: the teacher's status of the announcement.
    await log.until(
        lambda: any(
            isinstance(e, GroupStatus) and e.message_id == sent.message_id and e.delivered == STUDENTS
            for _, e in log.events
        )
    )
    status = teacher.groups.status(sent.message_id)
    assert status is not None
    print(f"status of the announcement: {status.describe()} {elapsed()}")


async def relayed(student: Node, teacher: Node) -> None:
    """Return once ``student`` has heard that ``teacher`` relays its inbox shard (where the 1:1 control
    messages for it travel: invitations, key handouts, receipts)."""
    shard = student.inbox_topic()
    await student.wait_for(lambda: teacher.peer_id in student.driver.router.topic_peers(shard))


async def run_node(name: str, stop: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``name``'s node until ``stop`` (one task per node: the 31 nodes then close in parallel)."""
    is_teacher = name == "teacher"
    async with Node.open(
        identity=Identity.generate(),
        listen=LOCAL,
        dht=False,
        relay_inbox_shards=is_teacher,
        config=HUB if is_teacher else None,
        score_params=ONE_ADDRESS,
        store_config=FAST_RETRY,
    ) as node:
        task_status.started(node)
        await stop.wait()


async def main() -> None:
    started = time.monotonic()
    names = ["teacher", *(f"student {i:02}" for i in range(1, STUDENTS + 1))]
    stop = trio.Event()
    async with trio.open_nursery() as running:
        nodes: dict[str, Node] = {name: await running.start(run_node, name, stop) for name in names}
        teacher, students = nodes["teacher"], {name: nodes[name] for name in names[1:]}
        async with trio.open_nursery() as dialling:
            for student in students.values():
                dialling.start_soon(student.connect, teacher.listen_addrs[0])
        with trio.fail_after(WAIT):
            for student in students.values():
                await relayed(student, teacher)
        print(f"{STUDENTS} students connected to the teacher ({time.monotonic() - started:.1f} s)")
        log = Log()
        async with trio.open_nursery() as collecting:
            for name, node in nodes.items():
                collecting.start_soon(log.collect, name, node)
            await lesson(teacher, students, log, started)
            collecting.cancel_scope.cancel()
        stop.set()


if __name__ == "__main__":
    trio.run(main)
