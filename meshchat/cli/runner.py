"""The network half of ``meshchat node``, ``chat``, ``mailbox`` and ``send``: a live ``Node`` under trio,
printing what happens.

The command line half (options, profile, passphrase) is in ``meshchat.cli.network``; this module is
imported only when one of those commands runs (it pulls in trio and py-libp2p). It prints the PeerId
and listen addresses first, then one line per event, as text or, with ``--json``, as one JSON object
per line (``listening``, ``reserved``, ``addresses``, ``peer_connected``, ``peer_disconnected``,
``direct_connection`` and ``punch_failed`` (hole punching: ``meshchat.net.punch``), ``message``,
``direct``, ``status``, ``store_problem``, ``published``, ``sent``, ``refused``, ``stdin_closed``,
``stopped``, ``mailbox``, ``statistics``; for groups ``group_message``, ``group_changed``,
``group_invited``, ``group_status``, ``group_problem``: ``meshchat.cli.group_events``; for devices
``devices_changed`` ("Bob added a device 'laptop'") and ``linked``; for files
``attachment``, ``attachment_fetched``, ``file_problem``: ``meshchat.cli.files``) for scripts
and tests. Text output passes every peer-chosen string
through ``terminal_text``; JSON carries it exactly. Output goes through an ``OutputQueue``: a reader of
standard output that lags or stops slows the output, never the node (live notices beyond
``OUTPUT_BUFFER`` are dropped and counted as ``statistics``' ``output_dropped``; ``direct`` never).

With ``--stdin`` every line read from standard input is published to the first topic;
``meshchat chat --to CONTACT`` sends each line sealed to the contact instead, in the order typed. A
line longer than ``MAX_STDIN_LINE`` is refused once, whole: nothing of it is sent. ``--reserve RELAY``
books a circuit relay slot and prints the relayed address. SIGINT and SIGTERM stop the node cleanly
(from before ``listening`` is printed). With ``events_after`` (``--events-after N``) the inbox messages
numbered after N are printed as ``direct`` events (each with its ``number``) before live ones.

``meshchat send`` dials the contact (joining the dial ``Node.send`` starts), says at once if the
contact was the only route and could not be reached, else waits for a peer or mailbox to take the
message and, if the contact itself has it, briefly for the receipt (``RECEIPT_WAIT``).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import trio
from libp2p.peer.id import ID
from rich.console import Console

from meshchat.cli.common import terminal_markup, terminal_text
from meshchat.cli.credentials import describe_credential_event
from meshchat.cli.documents import describe_document_event
from meshchat.cli.files import describe_file_event
from meshchat.cli.group_events import describe_group_event, short_id
from meshchat.cli.output import KEPT_EVENTS, OUTPUT_BUFFER, OUTPUT_DRAIN, OutputQueue, opened_output
from meshchat.contacts import Contact
from meshchat.credential_api import CredentialReceived, CredentialRequested, StatusReceived
from meshchat.crypto import inbox_topic_at
from meshchat.documents.events import DocumentEvent
from meshchat.errors import MeshchatError, NetworkError, UnknownGroup
from meshchat.files.events import Attachment, AttachmentFetched, FileProblem
from meshchat.groups.events import GroupEvent
from meshchat.i18n import N_, _
from meshchat.identity import Identity, PublicIdentity
from meshchat.inbox import DirectMessage
from meshchat.net import MessageDelivered, PeerJoined, PeerLeft
from meshchat.net.punch import DirectConnection, PunchFailed
from meshchat.net.reach_driver import DEFAULT_REACH
from meshchat.node import Node, NodeEvent
from meshchat.reach import AddressesChanged, NodeAddress
from meshchat.store.mailbox import MailboxLimits
from meshchat.store.messenger import DeviceListChanged, Linked, StatusChanged, StoreProblem
from meshchat.store.storage import OutboxStatus
from meshchat.wire import message_id

__all__ = [
    "KEPT_EVENTS",
    "MAX_STDIN_LINE",
    "OUTPUT_BUFFER",
    "OUTPUT_DRAIN",
    "RECEIPT_WAIT",
    "SEND_TIMEOUT",
    "Line",
    "LineSplitter",
    "LineTooLong",
    "OutputQueue",
    "run_node",
    "run_send",
]

#: Seconds ``meshchat send`` waits for a peer on the recipient's inbox shard before giving up.
SEND_TIMEOUT = 15.0

#: Seconds ``meshchat send`` waits, once the contact itself has the message (it is connected to it),
#: for the contact's signed receipt: on a live connection it comes back in well under a second, and
#: without it the sender's outbox would say ``relayed`` until its next ``meshchat node`` (the receipt
#: is sent again only when the sender retries).
RECEIPT_WAIT = 5.0

#: Longest line accepted on standard input for publishing, bytes: what one RPC may carry with room to
#: spare (a longer line is refused with a ``refused`` event, whole, not cut).
MAX_STDIN_LINE = 60 * 1024

#: Bytes read from standard input at a time.
STDIN_CHUNK = 64 * 1024


# --- standard input, line by line -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    """A complete input line, without its line ending."""

    #: The line's bytes.
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LineTooLong:
    """An input line over the limit, refused whole: none of its bytes are kept."""

    #: Its length in bytes (without the line ending).
    size: int


class LineSplitter:
    """Splits a byte stream into lines of at most ``limit`` bytes, sans-IO.

    A longer line is reported once, as ``LineTooLong``, when its end arrives; its bytes are dropped as
    they come, so memory stays within ``limit`` whatever the input.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        #: Bytes of the current line dropped so far, or None while it is within the limit.
        self._dropped: int | None = None

    def feed(self, chunk: bytes) -> list[Line | LineTooLong]:
        """Take the next bytes; return the lines they complete."""
        out: list[Line | LineTooLong] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            self._take(chunk[start:] if end < 0 else chunk[start:end])
            if end < 0:
                return out
            out.append(self._end_line())
            start = end + 1

    def finish(self) -> list[Line | LineTooLong]:
        """The input ended: its last line, if it had no line ending."""
        if self._dropped is None and not self._buffer:
            return []
        return [self._end_line()]

    def _take(self, piece: bytes) -> None:
        if self._dropped is not None:
            self._dropped += len(piece)
            return
        self._buffer += piece
        if len(self._buffer) > self.limit + 1:  # + 1: a "\r" before the "\n" is not part of the line
            self._dropped = len(self._buffer)
            self._buffer.clear()

    def _end_line(self) -> Line | LineTooLong:
        dropped, self._dropped = self._dropped, None
        if dropped is not None:
            return LineTooLong(size=dropped)
        data = bytes(self._buffer).removesuffix(b"\r")
        self._buffer.clear()
        return Line(data=data) if len(data) <= self.limit else LineTooLong(size=len(data))


# --- output that never blocks the node ------------------------------------------------------------

# --- printing -------------------------------------------------------------------------------------


class _Printer:
    """Writes events as JSON lines or as text, each line whole: straight to ``out`` (flushed, so pipes
    see it at once), or, given an ``OutputQueue``, into it without ever blocking the event loop."""

    def __init__(self, out: TextIO | OutputQueue, *, json_lines: bool) -> None:
        self._out = out
        self._json = json_lines

    def event(self, kind: str, text: str, **fields: object) -> None:
        if self._json:
            line = json.dumps({"event": kind, **fields}, ensure_ascii=False)
        else:
            line = f"{kind:18s} {terminal_text(text)}"
        self._emit(kind, line + "\n")

    def _emit(self, kind: str, text: str) -> None:
        if isinstance(self._out, OutputQueue):
            self._out.put(text, keep=kind in KEPT_EVENTS)
        else:
            self._out.write(text)
            self._out.flush()


class _ChatPrinter(_Printer):
    """``meshchat chat`` on a terminal: a conversation, not a log. Messages as ``HH:MM:SS name: text``
    with names in colour (rich), your own lines as ``you → name``, everything else dimmed."""

    def __init__(self, out: TextIO | OutputQueue) -> None:
        super().__init__(out, json_lines=False)
        # rich renders into a string (coloured if ``out`` is a terminal), written whole by ``_emit``.
        self._rendered = io.StringIO()
        self._console = Console(
            file=self._rendered, highlight=False, soft_wrap=True, force_terminal=out.isatty() or None
        )

    def event(self, kind: str, text: str, **fields: object) -> None:
        now = time.strftime("%H:%M:%S")
        if kind == "direct" and fields.get("to"):  # sent by another of our devices
            to = terminal_markup(str(fields.get("to_contact") or str(fields["to"])[-8:]))
            body = terminal_markup(_text_of(fields))
            self._console.print(
                _("[dim]{now} you → {to} (another device): {body}[/]").format(now=now, to=to, body=body)
            )
        elif kind in {"direct", "group_message"}:
            who = terminal_markup(str(fields.get("contact") or str(fields.get("sender", ""))[-8:]))
            body = terminal_markup(_text_of(fields))
            where = f"[dim]\\[{terminal_markup(str(fields['group']))}][/] " if kind == "group_message" else ""
            self._console.print(
                _("[dim]{now}[/] {where}[bold cyan]{who}[/]: {body}").format(
                    now=now, where=where, who=who, body=body
                )
            )
        elif kind in {"sent", "group_sent"}:
            to = terminal_markup(text.removeprefix("to "))
            self._console.print(
                _("[dim]{now} you → {to}: {text}[/]").format(
                    now=now, to=to, text=terminal_markup(_text_of(fields))
                )
            )
        else:
            self._console.print(
                _("[dim]{now} {kind}: {text}[/]").format(
                    now=now, kind=terminal_markup(kind), text=terminal_markup(text)
                )
            )
        rendered = self._rendered.getvalue()
        self._rendered.seek(0)
        self._rendered.truncate()
        self._emit(kind, rendered)


def _text_of(fields: dict[str, object]) -> str:
    return base64.b64decode(str(fields.get("data", ""))).decode("utf-8", errors="replace")


def describe_device_event(
    event: DeviceListChanged | Linked, printer: _Printer, names: dict[str, str]
) -> None:
    """``devices_changed``: "Bob added a device 'laptop'" (a contact's list, or ours: ``own``);
    ``linked``: this profile became a device of its person."""
    if isinstance(event, Linked):
        root = event.root.peer_id
        printer.event(
            "linked",
            _("this profile is now a device of {person}").format(person=names.get(root, root)),
            root=root,
            devices=[{"name": d.name, "peer_id": d.public.peer_id} for d in event.devices.devices],
        )
        return
    root = PublicIdentity.from_bytes(event.root).peer_id
    who = _("you") if event.own else names.get(root, root)
    # A list learnt for the first time names the person's primary too: not a device they added.
    added = [d for d in event.added if d.key != event.root]
    parts = [_("{who} added a device {name!r}").format(who=who, name=d.name) for d in added]
    parts += [_("{who} removed a device {name!r}").format(who=who, name=d.name) for d in event.removed]
    printer.event(
        "devices_changed",
        "; ".join(parts)
        or _("{who}: device list version {version}").format(who=who, version=event.devices.version),
        peer_id=root,
        contact=None if event.own else names.get(root),
        own=event.own,
        version=event.devices.version,
        added=[{"name": d.name, "peer_id": d.public.peer_id} for d in added],
        removed=[{"name": d.name, "peer_id": d.public.peer_id} for d in event.removed],
    )


def _describe(event: NodeEvent, printer: _Printer, names: dict[str, str] | None = None) -> None:
    match event:
        case DirectMessage(sender=sender, contact=contact, body=body, sent_at_ms=sent_at, message_id=mid):
            who = contact.name if contact is not None else sender.peer_id
            to = event.to
            to_name = to.name if isinstance(to, Contact) else None if to is None else to.peer_id
            device = event.device
            where = (
                _("from {who}").format(who=who)
                if to is None
                else _("you to {to_name}").format(to_name=to_name)
            )
            where += "" if device is None else _(" (device {device})").format(device=device.peer_id[-8:])
            printer.event(
                "direct",
                f"{where}: {body.decode('utf-8', errors='replace')}",
                sender=sender.peer_id,
                device=None if device is None else device.peer_id,
                to=None if to is None else to.public.peer_id if isinstance(to, Contact) else to.peer_id,
                to_contact=to_name if isinstance(to, Contact) else None,
                contact=contact.name if contact is not None else None,
                sent_at_ms=sent_at,
                message_id=mid.hex(),
                seq=event.seq,
                number=event.number,
                data=base64.b64encode(body).decode("ascii"),
            )
        case StatusChanged(message_id=mid, status=status, error=error):
            printer.event(
                "status",
                f"{mid.hex()[:16]} {status.value}" + (f" ({error})" if error else ""),
                message_id=mid.hex(),
                status=status.value,
                error=error,
            )
        case DeviceListChanged() | Linked():
            describe_device_event(event, printer, names or {})
        case StoreProblem(error=error):
            printer.event("store_problem", str(error), error=str(error))
        case MessageDelivered(topic=topic, message_id=mid, data=data, source=source):
            text = data.decode("utf-8", errors="replace")
            printer.event(
                "message",
                _("[{topic}] from {source}: {text}").format(topic=topic, source=source, text=text),
                topic=topic,
                message_id=mid.hex(),
                sender=source,
                data=base64.b64encode(data).decode("ascii"),
            )
        case PeerJoined(peer=peer, protocol=protocol, outbound=outbound):
            printer.event(
                "peer_connected",
                f"{peer} ({protocol.value}, {'outbound' if outbound else 'inbound'})",
                peer=peer,
                protocol=protocol.value,
                outbound=outbound,
            )
        case PeerLeft(peer=peer):
            printer.event("peer_disconnected", peer, peer=peer)
        # a hole punch replaced a relayed connection, or failed (the relay stays)
        case DirectConnection(peer=peer, after_s=after_s, address=address):
            printer.event(
                "direct_connection",
                _("direct connection to {peer} after {seconds:.1f} s").format(peer=peer, seconds=after_s),
                peer=peer,
                after_s=round(after_s, 3),
                address=address,
            )
        case PunchFailed(peer=peer, after_s=after_s, reason=reason):
            printer.event(
                "punch_failed",
                _("hole punch to {peer} failed ({reason}); staying on the relay").format(
                    peer=peer, reason=reason
                ),
                peer=peer,
                after_s=round(after_s, 3),
                reason=reason,
            )


#: The kinds of address, as ``addresses`` prints them.
_ADDRESS_KINDS = {
    "public": N_("public address"),
    "private": N_("private address"),
    "relayed": N_("address through a relay"),
}


def describe_addresses(addresses: Sequence[NodeAddress], printer: _Printer) -> None:
    """``addresses``: each of the node's addresses and its kind (public, relayed, private)."""
    printer.event(
        "addresses",
        "; ".join(f"{_(_ADDRESS_KINDS[a.kind])} {a.address}" for a in addresses),
        addresses=[{"address": a.address, "kind": a.kind} for a in addresses],
    )


async def _print_events(
    node: Node, printer: _Printer, output: OutputQueue, *, addresses: Sequence[NodeAddress] = ()
) -> None:
    """Print the node's events. After a ``direct`` message (never dropped) wait for room in
    ``output`` before taking the next event: the node replays committed messages from its store, so
    waiting costs only output latency, while live notices that do not fit are dropped and counted.
    ``addresses`` were printed already: an ``AddressesChanged`` with the same ones is not repeated."""
    shown = tuple(addresses)
    async for event in node.events():
        if isinstance(event, AddressesChanged):
            if event.addresses != shown:
                shown = event.addresses
                describe_addresses(shown, printer)
        elif isinstance(event, GroupEvent):
            describe_group_event(
                event, printer, names=_contact_names(node), group_name=lambda g: _group_name(node, g)
            )
        elif isinstance(event, Attachment | AttachmentFetched | FileProblem):
            describe_file_event(event, printer, names=_contact_names(node))
        elif isinstance(event, DocumentEvent):
            describe_document_event(event, printer, names=_contact_names(node))
        elif isinstance(event, CredentialRequested | CredentialReceived | StatusReceived):
            describe_credential_event(event, printer, names=_contact_names(node))
        else:
            _describe(event, printer, _contact_names(node) if isinstance(event, DeviceListChanged) else {})
        if isinstance(event, DirectMessage):
            await output.wait_for_room()


def _contact_names(node: Node) -> dict[str, str]:
    """Contact names by PeerId, for group lines."""
    return {c.peer_id: c.name for c in node.contacts}


def _group_name(node: Node, group_id: bytes) -> str:
    """A group's name (its short id if the node does not know it)."""
    try:
        return node.groups.members(group_id).name
    except UnknownGroup:
        return short_id(group_id)


LineHandler = Callable[[bytes], Awaitable[None]]


async def _read_stdin(handle: LineHandler, printer: _Printer) -> None:
    """Hand each line of standard input (without its line ending) to ``handle``, one after the other,
    until end of input; refuse a line over ``MAX_STDIN_LINE`` once, whole."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    splitter = LineSplitter(MAX_STDIN_LINE)
    async with stream:
        while chunk := await stream.receive_some(STDIN_CHUNK):
            for item in splitter.feed(chunk):
                await _checked(handle, item, printer)
        for item in splitter.finish():
            await _checked(handle, item, printer)
    printer.event("stdin_closed", _("standard input closed"))


async def _checked(handle: LineHandler, item: Line | LineTooLong, printer: _Printer) -> None:
    if isinstance(item, LineTooLong):
        printer.event(
            "refused",
            _("a line of {size:,} bytes; the limit is {max_stdin_line:,} (nothing of it was sent)").format(
                size=item.size, max_stdin_line=MAX_STDIN_LINE
            ),
            limit=MAX_STDIN_LINE,
            size=item.size,
        )
        return
    try:
        await handle(item.data)
    except MeshchatError as exc:
        printer.event("refused", str(exc), error=type(exc).__name__)


async def _publish_line(node: Node, topic: str, line: bytes, printer: _Printer) -> None:
    await node.publish(topic, line)
    if topic in node.driver.router.config.signed_topics:  # its id is author + seqno, chosen by the router
        printer.event(
            "published",
            _("[{topic}] {count} bytes, signed").format(topic=topic, count=len(line)),
            topic=topic,
        )
    else:
        printer.event(
            "published",
            _("[{topic}] {count} bytes").format(topic=topic, count=len(line)),
            topic=topic,
            message_id=message_id(line).hex(),
        )


def _hears(node: Node, contact: Contact) -> bool:
    """True if ``contact`` is a gossip peer on its own inbox shard: a publish now reaches it."""
    topic = inbox_topic_at(contact.public, time.time())
    return contact.peer_id in node.driver.router.topic_peers(topic)


def _connected(node: Node, contact: Contact) -> bool:
    """True if ``node`` has a connection to ``contact`` now."""
    return bool(node.host.get_network().connections.get(ID.from_base58(contact.peer_id)))


class _ChatSender:
    """Sends ``chat`` lines to one contact. ``Node.send`` keeps a recipient's messages in the order they
    were sent (one ordered queue per recipient, published once the contact is reached, and again at
    once when it connects), so this only dials at the start, while the user types the first line, and
    prints what was sent."""

    def __init__(self, node: Node, contact: Contact, printer: _Printer) -> None:
        self._node = node
        self._contact = contact
        self._printer = printer

    async def reach(self) -> None:
        """Dial the contact (best effort: the outbox retries what cannot go now)."""
        await self._node.reach(self._contact)

    async def send(self, line: bytes) -> None:
        """Send one line, after the lines before it."""
        contact = self._contact
        handle = await self._node.send(contact, line)
        self._printer.event(
            "sent",
            _("to {name}").format(name=contact.name),
            to=contact.peer_id,
            message_id=handle.message_id.hex(),
            data=base64.b64encode(line).decode("ascii"),
        )


async def run_node(
    profile: Path,
    identity: Identity,
    *,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    mdns: bool,
    topics: Sequence[str],
    signed_topics: Sequence[str],
    json_lines: bool,
    read_stdin: bool,
    out: TextIO,
    relay: bool = False,
    chat_with: str | None = None,
    circuit_relay: bool = False,
    reserve: Sequence[str] = (),
    mailboxes: Sequence[str] = (),
    mailbox_limits: MailboxLimits | None = None,
    events_after: int | None = None,
    cover_interval: float | None = None,
    auto_relay: bool = False,
) -> None:
    """Run a node until SIGINT or SIGTERM, printing its events to ``out``.

    With ``read_stdin`` each input line is published to the first topic, or, with ``chat_with``, sent
    sealed to that contact. With ``mailbox_limits`` the node serves as a mailbox within them; it stores
    its own messages on ``mailboxes`` (and on any mailbox it meets). With ``events_after`` the inbox
    messages numbered after it are printed (as ``direct`` events) before live ones, so a script that
    follows the output resumes after the last ``number`` it handled. With ``auto_relay`` it runs
    AutoNAT and chooses, renews and replaces circuit relays by itself (``DEFAULT_REACH``); it prints
    its addresses and their kinds at the start and whenever they change.
    """
    async with opened_output(out) as output:
        printer = (
            _ChatPrinter(output)
            if chat_with is not None and not json_lines
            else _Printer(output, json_lines=json_lines)
        )
        async with Node.open(
            profile,
            identity=identity,
            listen=listen,
            bootstrap=bootstrap,
            mdns=mdns,
            signed_topics=signed_topics,
            relay_inbox_shards=relay,
            circuit_relay=circuit_relay,
            mailbox=mailbox_limits is not None,
            mailbox_limits=mailbox_limits,
            mailboxes=mailboxes,
            events_after=events_after,
            cover_interval=cover_interval,  # dummy envelopes (meshchat.store.cover)
            reach=DEFAULT_REACH if auto_relay else None,
            hole_punch=True,  # relayed connections become direct where NATs allow
        ) as node:
            contact = node.contacts.find(chat_with) if chat_with is not None else None
            if contact is not None and _unreachable_now(contact, bootstrap, mailboxes):
                sys.stderr.write(
                    _(
                        "warning: {name}'s invite has no address and no mailbox, and no --bootstrap or "
                        "--mailbox was given: what you type waits in the outbox until their node "
                        "reaches this one (ask them for an invite made while their `meshchat node` "
                        "runs)\n"
                    ).format(name=terminal_text(contact.name))
                )
            # SIGINT and SIGTERM are caught from before "listening" is printed: a script that stops the
            # node as soon as it printed that gets a clean stop (exit 0, "stopped"), not a KeyboardInterrupt.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                for failure in node.transport_failures:  # say what is missing, go on
                    printer.event(
                        "transport_unavailable",
                        _("{problem}; going on without it").format(problem=failure),
                        transport=failure.transport,
                        address=failure.address,
                        missing=failure.missing,
                        detail=failure.detail,
                    )
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
                    for relay_address in reserve:
                        relayed = await node.reserve(relay_address)
                        printer.event(
                            "reserved", _("reachable through {relayed}").format(relayed=relayed), addr=relayed
                        )
                    for topic in topics:
                        await node.subscribe(topic)
                    shown = node.addresses()
                    describe_addresses(shown, printer)
                    nursery.start_soon(
                        functools.partial(_print_events, node, printer, output, addresses=shown)
                    )
                    if contact is not None:
                        sender = _ChatSender(node, contact, printer)
                        nursery.start_soon(sender.reach)  # dial while the user types the first line
                        nursery.start_soon(_read_stdin, sender.send, printer)
                    elif read_stdin:

                        async def publish(line: bytes) -> None:
                            await _publish_line(node, topics[0], line, printer)

                        nursery.start_soon(_read_stdin, publish, printer)
            _print_totals(node, printer, output.dropped)


async def _stop_on_signal(signals: AsyncIterator[int], printer: _Printer, scope: trio.CancelScope) -> None:
    """Print ``stopped`` and cancel ``scope`` at the first SIGINT or SIGTERM."""
    async for signum in signals:
        name = signal.Signals(signum).name
        printer.event("stopped", name, signal=name)
        scope.cancel()
        return


def _print_totals(node: Node, printer: _Printer, output_dropped: int) -> None:
    held = node.mailbox_statistics()
    if held is not None:
        printer.event(
            "mailbox",
            _("holding {items} envelopes ({bytes:,} bytes); refused {refused}").format(
                items=held.items, bytes=held.bytes, refused=held.refused or _("none")
            ),
            items=held.items,
            bytes=held.bytes,
            stored=held.stored,
            fetched=held.fetched,
            deleted=held.deleted,
            refused=held.refused,
        )
    stats = node.statistics()
    drops = {reason.value: count for reason, count in stats.drops.items() if count}
    router_drops = {reason.value: count for reason, count in stats.router.drops.items() if count}
    lagged = (
        _("; {output_dropped} lines of output dropped (not read in time)").format(
            output_dropped=output_dropped
        )
        if output_dropped
        else ""
    )
    printer.event(
        "statistics",
        _("delivered {delivered}, drops {drops}, router {router_drops}").format(
            delivered=stats.router.delivered, drops=drops or _("none"), router_drops=router_drops or _("none")
        )
        + lagged,
        delivered=stats.router.delivered,
        drops=drops,
        router_drops=router_drops,
        output_dropped=output_dropped,
        **_reach_totals(node),
    )


def _reach_totals(node: Node) -> dict[str, object]:
    """With ``--auto-relay``: the ``reach`` field of ``statistics`` (AutoNAT, relays held, renewed,
    given up by reason, replaced); nothing without it."""
    reach = node.reach_statistics()
    if reach is None:
        return {}
    return {
        "reach": {
            "reachability": reach.reachability.value,
            "relays_held": reach.relays_held,
            "reservations": reach.reservations,
            "renewals": reach.renewals,
            "renewals_failed": reach.renewals_failed,
            "dropped": {reason.value: count for reason, count in reach.dropped.items() if count},
            "replaced": reach.replaced,
            "probes_ok": reach.probes_ok,
            "probes_failed": reach.probes_failed,
        }
    }


def _unreachable_now(contact: Contact, bootstrap: Sequence[str], mailboxes: Sequence[str]) -> bool:
    """True if nothing could carry a message to ``contact`` now: their invite has no address and no
    mailbox, and no peer (``--bootstrap``) or mailbox (``--mailbox``) was given to meet them through."""
    return not (contact.addrs or contact.mailboxes or bootstrap or mailboxes)


async def run_send(
    profile: Path,
    identity: Identity,
    *,
    to: str,
    text: str,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_lines: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Send one sealed message to contact ``to``: queue it in the profile's outbox, then return once a
    peer on the contact's inbox shard has it (or, given ``mailboxes``, once a mailbox stored it). If
    that peer is the contact itself, it also waits (at most ``RECEIPT_WAIT``) for their receipt, so
    the outbox says ``delivered`` without another run.

    Raises ``NetworkError`` if that does not happen within ``SEND_TIMEOUT``, or at once if nothing
    could carry it (the contact's invite has no address or mailbox and no ``bootstrap`` or
    ``mailboxes`` were given); the message stays queued in the outbox either way and ``meshchat node``
    on this profile goes on retrying it.
    """
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        contact = node.contacts.find(to)
        handle = await node.send(contact, text)
        no_route = not (contact.addrs or contact.mailboxes)
        # Only the contact itself can take it (no mailbox, no peer given): if dialling them fails, say
        # so at once rather than wait out SEND_TIMEOUT. ``reach`` joins the dial ``send`` started.
        only_them = not (contact.mailboxes or bootstrap or mailboxes)
        missed = False
        if not _unreachable_now(contact, bootstrap, mailboxes):
            with trio.move_on_after(SEND_TIMEOUT):
                if only_them:
                    await node.reach(contact)
                    missed = not _connected(node, contact)
                if not missed:
                    await handle.wait_until(OutboxStatus.STORED if mailboxes else OutboxStatus.RELAYED)
            if handle.status in (OutboxStatus.RELAYED, OutboxStatus.STORED) and _hears(node, contact):
                with trio.move_on_after(RECEIPT_WAIT):
                    await handle.wait_until(OutboxStatus.DELIVERED)
        status = handle.status
        if status in (OutboxStatus.QUEUED, OutboxStatus.FAILED):
            why = handle.error or (
                f"{contact.name}'s invite has no address and no mailbox"
                + ("" if bootstrap or mailboxes else " and no --bootstrap or --mailbox was given")
                + ", so nothing can carry it now"
                if no_route
                else f"{contact.name} could not be reached at the address in their invite or by the DHT"
                if missed
                else f"nobody on their inbox shard or a mailbox took it in {SEND_TIMEOUT:g} s"
            )
            hint = (
                f" (ask {contact.name} for an invite made while their `meshchat node` runs, and "
                "`meshchat add` it again)"
                if no_route and status is not OutboxStatus.FAILED
                else ""
            )
            raise NetworkError(
                f"send to {contact.name}",
                f"{why}; message {handle.message_id.hex()} is {status.value} in the outbox"
                + ("" if status is OutboxStatus.FAILED else " and `meshchat node` retries it")
                + hint,
            )
        printer.event(
            "sent",
            _("to {name}: {status}").format(name=contact.name, status=status.value),
            to=contact.peer_id,
            message_id=handle.message_id.hex(),
            status=status.value,
        )
