"""The network half of ``meshchat group create | invite | remove | leave | rename | promote | demote |
send`` and of ``meshchat chat --group``: a live ``Node`` under trio (imported only when one of them
runs: trio and py-libp2p take most of a second to import).

**A one-shot change** (``run_group_change``) opens a node on the profile as ``meshchat send`` does,
makes the change through the groups core (it is durable in ``groups.db`` before anything goes out),
hands the core's actions to the node's group driver, and then waits, at most ``SEND_TIMEOUT``, until
what the change produced has left this machine:

- each control message on the sealed 1:1 path (an invitation with the group's operations, a chain
  handout, the news of a removal): its outbox record ``relayed`` (``stored`` with ``--mailbox``), then,
  for the recipients it is connected to, briefly (``RECEIPT_WAIT``) ``delivered``;
- the envelopes published to the group (the change's operation, or the message of ``group send``): it
  dials the members who are contacts and, when the first publish found no member on the group's
  topic (nobody had heard this node yet), publishes them once more as soon as one is there; a
  ``group send`` then waits for the group message's status: ``stored`` on a mailbox, or ``delivered``
  to the members on the topic (their batched receipts come within ``RECEIPT_DELAY``).

If that does not happen in time the command fails (exit status 1, an ``error:`` line), as ``meshchat
send`` does: the change is made and its control messages and group message stay queued (durable);
``meshchat node`` on the profile sends them later. Members who were offline learn a change's
operations from the group's mailboxes, or with the next operation.

**The group chat** (``run_group_chat``) is ``meshchat chat --to`` for a group: each line typed is one
group message (``node.groups.send``), every event is printed (group lines from
``meshchat.cli.group_events``), and the messages of the chat's group are marked read as they are shown.
"""

from __future__ import annotations

import base64
import functools
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TextIO

import trio

from meshchat.cli.common import CommandError
from meshchat.cli.group_events import describe_group_event, label, peer_of, short_id, view_json
from meshchat.cli.output import OutputQueue, opened_output
from meshchat.cli.runner import (
    RECEIPT_WAIT,
    SEND_TIMEOUT,
    _ChatPrinter,
    _contact_names,
    _describe,
    _group_name,
    _hears,
    _print_totals,
    _Printer,
    _read_stdin,
    _stop_on_signal,
)
from meshchat.errors import DecodeError, NetworkError, NotInGroup, UnknownPeer
from meshchat.groups.core import GroupView
from meshchat.groups.events import (
    GroupAction,
    GroupEvent,
    GroupMessage,
    MemberStatus,
    PublishGroup,
    SendControl,
)
from meshchat.groups.seal import group_topic
from meshchat.groups.storage import GroupOutRecord
from meshchat.i18n import _
from meshchat.identity import Identity, PublicIdentity
from meshchat.node import Node
from meshchat.store.storage import OutboxRecord, OutboxStatus

__all__ = ["OUTBOX_MARGIN", "Change", "ChangeKind", "member_public", "run_group_change", "run_group_chat"]

#: Outbox records looked at beyond the ones a change made, when finding them again (other records
#: may be written meanwhile: receipts owed to members, retries of older messages).
OUTBOX_MARGIN = 200

#: Messages read from the history at a time when ``chat --group --events-after N`` replays it.
REPLAY_PAGE = 100

#: Outbox statuses that say a control message has left this machine.
_LEFT = frozenset({OutboxStatus.RELAYED, OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ})
#: ... and the ones after which waiting is pointless.
_FINAL = frozenset({OutboxStatus.EXPIRED, OutboxStatus.FAILED})


class ChangeKind(Enum):
    """What a one-shot group command does (its verb in messages)."""

    CREATE = "create"
    INVITE = "invite"
    REMOVE = "remove"
    LEAVE = "leave"
    RENAME = "rename"
    PROMOTE = "promote"
    DEMOTE = "demote"
    SEND = "send"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One group command's arguments."""

    kind: ChangeKind
    #: The group (name, hex id or prefix); for CREATE its new name.
    group: str
    #: The member (contact name or PeerId): INVITE, REMOVE, PROMOTE, DEMOTE.
    member: str = ""
    #: CREATE: the members invited; RENAME: ``(new name,)``.
    members: tuple[str, ...] = ()
    #: SEND: the message.
    text: str = ""


def member_public(node: Node, who: str) -> PublicIdentity:
    """A member named by contact name or PeerId (``UnknownPeer`` if neither)."""
    try:
        return node.contacts.find(who).public
    except UnknownPeer:
        pass
    try:
        return PublicIdentity.from_peer_id(who)
    except DecodeError as exc:
        raise UnknownPeer(who) from exc


def _apply(node: Node, change: Change) -> tuple[bytes, list[GroupAction], GroupOutRecord | None]:
    """Make ``change`` in the groups core: (group id, its actions, the message record of a SEND).
    ``CommandError`` for an argument the core refuses as invalid (a name it cannot carry)."""
    core = node.groups.driver.core
    now = node.groups.driver.now()
    try:
        if change.kind is ChangeKind.CREATE:
            keys = [member_public(node, m) for m in change.members]
            return (*core.create(change.group, keys, wall_now=now), None)
        group_id = node.groups.id_of(change.group)
        match change.kind:
            case ChangeKind.SEND:
                record, actions = core.send(group_id, change.text.encode("utf-8"), wall_now=now)
                return group_id, actions, record
            case ChangeKind.RENAME:
                return group_id, core.rename(group_id, change.members[0], wall_now=now), None
            case ChangeKind.LEAVE:
                return group_id, core.leave(group_id, wall_now=now), None
            case ChangeKind.INVITE:
                member = _member(node, group_id, change, member=False)
                return group_id, core.invite(group_id, member, wall_now=now), None
        key = _member(node, group_id, change, member=True).ed25519
        operation = {
            ChangeKind.REMOVE: core.remove,
            ChangeKind.PROMOTE: core.promote,
            ChangeKind.DEMOTE: core.demote,
        }[change.kind]
        return group_id, operation(group_id, key, wall_now=now), None
    except ValueError as exc:  # sign_op's check of what it signs (group.py checks names first)
        raise CommandError(str(exc)) from exc


def _member(node: Node, group_id: bytes, change: Change, *, member: bool) -> PublicIdentity:
    """``change.member``'s key, checked to be (``member``) or not be a member of the group; said
    with the name the user gave (the core names keys in hex)."""
    public = member_public(node, change.member)
    view = node.groups.members(group_id)
    if member and public.ed25519 not in view.members:
        raise NotInGroup(f"{change.member} is not a member of {view.name}")
    if not member and public.ed25519 in view.members:
        raise NotInGroup(f"{change.member} is a member of {view.name} already")
    return public


class _Progress:
    """What one change sent, and how far it got (read from the node's outbox and groups core)."""

    def __init__(self, node: Node, controls: list[OutboxRecord], message: GroupOutRecord | None) -> None:
        self._node = node
        self.ids = {r.message_id for r in controls}
        self.recipients = {r.message_id: r.recipient for r in controls}
        self.message_id = message.message_id if message is not None else None
        self.records = {r.message_id: r for r in controls}

    def refresh(self) -> None:
        window = len(self.ids) + OUTBOX_MARGIN
        for record in self._node.outbox(window):
            if record.message_id in self.ids:
                self.records[record.message_id] = record

    def controls_left(self, *, stored: bool) -> bool:
        self.refresh()
        wanted = {OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ} if stored else _LEFT
        return all(r.status in wanted or r.status in _FINAL for r in self.records.values())

    def controls_delivered(self, recipients: set[bytes]) -> bool:
        self.refresh()
        return all(
            r.status in {OutboxStatus.DELIVERED, OutboxStatus.READ} | _FINAL
            for r in self.records.values()
            if r.recipient in recipients
        )

    def message(self) -> tuple[int, int, str]:
        """(stored on, delivered to, description) of the group message."""
        if self.message_id is None:
            return 0, 0, ""
        status = self._node.groups.status(self.message_id)
        if status is None:
            return 0, 0, "expired"
        return status.stored, status.delivered, status.describe()

    def message_left(self) -> bool:
        """True once a mailbox stored the group message or a member received it."""
        stored, delivered, _text = self.message()
        return stored > 0 or delivered > 0

    def pending(self) -> list[OutboxRecord]:
        return [r for r in self.records.values() if r.status not in _LEFT]


def _topic_members(node: Node, topic: str, members: set[str]) -> set[str]:
    """The members' PeerIds among the peers we know are on ``topic``."""
    return members & set(node.driver.router.topic_peers(topic))


def _topic_has(node: Node, topic: str, members: set[str]) -> bool:
    return bool(_topic_members(node, topic, members))


async def _publish_again(
    node: Node, publishes: list[PublishGroup], members: set[str], done: trio.Event
) -> None:
    """Wait until a member is on the group's topic, then publish the change's envelopes once more
    (their first publish found nobody there); set ``done`` once one of them was written to a peer."""
    for publish in publishes:
        topic = publish.topic
        await node.wait_for(functools.partial(_topic_has, node, topic, members))
        if await node.driver.publish_and_flush(publish.topic, publish.envelope, again=True):
            done.set()


async def run_group_change(
    profile: Path,
    identity: Identity,
    *,
    change: Change,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_lines: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Make ``change`` and wait (bounded) until what it produced left; see the module docstring.
    ``NetworkError`` if it did not within ``SEND_TIMEOUT`` (the change is made, its messages queued)."""
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        me = identity.public.ed25519
        group_id, actions, message = _apply(node, change)
        node.groups.driver.perform(actions)
        # The control messages just written are the newest outbox records (nothing ran in between).
        sends = sum(isinstance(a, SendControl) for a in actions)
        progress = _Progress(node, node.outbox(sends) if sends else [], message)
        view = node.groups.members(group_id)
        others = set(view.members) - {me}
        peers = {peer_of(k) for k in others}
        concerned = others | set(progress.recipients.values())
        contacts = [c for c in node.contacts if c.public.ed25519 in concerned]
        # An envelope published before any member was on the group's topic reached nobody.
        publishes = [a for a in actions if isinstance(a, PublishGroup)]
        missed = [p for p in publishes if not _topic_members(node, p.topic, peers)]
        published = trio.Event()
        if not missed or not others or message is not None:
            published.set()  # a message's own status says where it is
        no_route = not (bootstrap or mailboxes or any(c.addrs or c.mailboxes for c in contacts))
        on_topic = 0
        with trio.move_on_after(0 if no_route else SEND_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for contact in contacts:
                    nursery.start_soon(node.reach, contact)
                if missed:
                    nursery.start_soon(_publish_again, node, missed, peers, published)
                if not mailboxes:
                    await published.wait()
                await node.wait_for(lambda: progress.controls_left(stored=bool(mailboxes)))
                if message is not None and others:
                    await node.wait_for(progress.message_left)
                    on_topic = len(_topic_members(node, group_topic(message.tag), peers))
                hearing = {c.public.ed25519 for c in contacts if _hears(node, c)}
                with trio.move_on_after(RECEIPT_WAIT):
                    await node.wait_for(lambda: progress.controls_delivered(hearing))
                    if on_topic:
                        await node.wait_for(lambda: progress.message()[1] >= on_topic)
                nursery.cancel_scope.cancel()
        progress.refresh()
        if mailboxes:
            published.set()  # stored on the mailboxes with the message (not tracked for operations)
        _report(
            change,
            view,
            progress,
            printer,
            names=_contact_names(node),
            me=me,
            no_route=no_route,
            published=published.is_set(),
        )


def _report(
    change: Change,
    view: GroupView,
    progress: _Progress,
    printer: _Printer,
    *,
    names: dict[str, str],
    me: bytes,
    no_route: bool,
    published: bool,
) -> None:
    """Print the result, or raise ``NetworkError`` naming what did not leave."""
    verb = change.kind.value
    what = f"{verb} {view.name} ({short_id(view.group_id)})"
    pending = progress.pending()
    stored, delivered, described = progress.message()
    message_left = progress.message_id is None or progress.message_left() or not (view.members - {me})
    if pending or not message_left or not published:
        parts = []
        if pending:
            whom = ", ".join(sorted({label(r.recipient, names) for r in pending}))
            parts.append(f"{len(pending)} control message(s) to {whom} wait in the outbox")
        if progress.message_id is not None and not message_left:
            parts.append(f"group message {progress.message_id.hex()} waits in the group outbox")
        if not published:
            parts.append("no member was online to take the change (members offline learn it from mailboxes)")
        why = (
            "no member is a contact with an address or mailbox and no --bootstrap or --mailbox was given"
            if no_route
            else f"no member or mailbox took it in {SEND_TIMEOUT:g} s"
        )
        raise NetworkError(
            what,
            f"done in this profile, but {why}: {'; '.join(parts)}; `meshchat node` on this profile "
            "sends what waits",
        )
    sent = [
        {
            "message_id": r.message_id.hex(),
            "to": peer_of(r.recipient),
            "contact": names.get(peer_of(r.recipient)),
            "status": r.status.value,
        }
        for r in progress.records.values()
    ]
    text = f"{view.name} ({short_id(view.group_id)}): done"
    if sent:
        text += "; sent to " + ", ".join(
            f"{label(r.recipient, names)} ({r.status.value})" for r in progress.records.values()
        )
    extra: dict[str, object] = {}
    if progress.message_id is not None:
        extra = {
            "message_id": progress.message_id.hex(),
            "status": described,
            "stored": stored,
            "delivered": delivered,
        }
        text += f"; message {progress.message_id.hex()[:16]} {described}"
    printer.event(verb, text, group=view_json(view, names, me), controls=sent, **extra)


# --- the group chat -------------------------------------------------------------------------------


async def run_group_chat(
    profile: Path,
    identity: Identity,
    *,
    group: str,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_lines: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
    events_after: int | None = None,
) -> None:
    """``meshchat chat --group``: each stdin line is one message to ``group``; events are printed.
    With ``events_after`` the group's messages numbered after it are printed first (its history:
    direct messages are not replayed here)."""
    async with opened_output(out) as output:
        printer = _ChatPrinter(output) if not json_lines else _Printer(output, json_lines=True)
        async with Node.open(
            profile,
            identity=identity,
            listen=listen,
            bootstrap=bootstrap,
            mailboxes=mailboxes,
        ) as node:
            group_id = node.groups.id_of(group)
            view = node.groups.members(group_id)
            if view.status is not MemberStatus.JOINED:
                hint = (
                    f"; accept first: meshchat group join {short_id(group_id)}"
                    if view.status is MemberStatus.INVITED
                    else ""
                )
                raise NotInGroup(f"you are {view.status.value} in {view.name}{hint}")
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                printer.event(
                    "listening",
                    _("{peer_id} on {listen_addrs}").format(
                        peer_id=node.peer_id, listen_addrs=", ".join(node.listen_addrs)
                    ),
                    peer_id=node.peer_id,
                    addrs=node.listen_addrs,
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_stop_on_signal, signals, printer, nursery.cancel_scope)
                    shown = await _replay(node, group_id, printer, output, events_after)
                    nursery.start_soon(_print_chat_events, node, group_id, printer, shown)
                    me = identity.public.ed25519
                    for contact in node.contacts:
                        if contact.public.ed25519 in view.members - {me}:
                            nursery.start_soon(node.reach, contact)

                    async def send(line: bytes) -> None:
                        record = node.groups.send(group_id, line)
                        printer.event(
                            "group_sent",
                            _("to {node}").format(node=_group_name(node, group_id)),
                            group_id=group_id.hex(),
                            message_id=record.message_id.hex(),
                            data=base64.b64encode(line).decode("ascii"),
                        )

                    nursery.start_soon(_read_stdin, send, printer)
            _print_totals(node, printer, output.dropped)


async def _replay(
    node: Node, group_id: bytes, printer: _Printer, output: OutputQueue, after: int | None
) -> int:
    """Print the group's messages numbered after ``after`` (none if None), page by page, waiting for
    room in ``output`` between lines; the last number printed (``after`` if none). They are not
    marked read again (their read receipts went when they were first shown)."""
    if after is None:
        return 0
    names = _contact_names(node)
    while page := node.groups.history(group_id, after=after, limit=REPLAY_PAGE):
        for record in page:
            message = GroupMessage(
                group_id=group_id,
                number=record.number,
                sender=record.sender,
                body=record.body,
                ref=record.ref,
                sent_at_ms=record.sent_at_ms,
                message_id=record.message_id,
            )
            describe_group_event(message, printer, names=names, group_name=lambda g: _group_name(node, g))
            await output.wait_for_room()
        after = page[-1].number
    return after


async def _print_chat_events(node: Node, group_id: bytes, printer: _Printer, shown: int) -> None:
    """Print every event (but the group messages ``_replay`` printed already, numbered up to
    ``shown``); the chat's group messages are marked read once shown."""
    async for event in node.events():
        if isinstance(event, GroupMessage) and event.group_id == group_id and event.number <= shown:
            continue
        if not isinstance(event, GroupEvent):
            _describe(event, printer)
            continue
        names = _contact_names(node)
        describe_group_event(event, printer, names=names, group_name=lambda g: _group_name(node, g))
        if isinstance(event, GroupMessage) and event.group_id == group_id:
            node.groups.mark_read(event)
