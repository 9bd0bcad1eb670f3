"""``meshchat node``: a long-lived node on the real network, printing what happens.

The command line half (options, profile, passphrase) is in ``meshchat.cli``; this module runs the node:
it prints the PeerId and listen addresses first, then one line per event, as text or, with ``--json``,
as one JSON object per line (``listening``, ``reserved``, ``peer_connected``, ``peer_disconnected``,
``message``, ``direct``, ``published``, ``sent``, ``stopped``, ``statistics``) for scripts and tests.
With ``--stdin`` every line read from standard input is published to the first topic;
``meshchat chat --to CONTACT`` sends each line sealed to the contact instead. ``--reserve RELAY`` books a
circuit relay slot and prints the relayed address. SIGINT and SIGTERM stop the node cleanly.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

import trio
from rich.console import Console
from rich.markup import escape

from meshchat.errors import MeshchatError, NetworkError
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net import MessageDelivered, PeerJoined, PeerLeft
from meshchat.node import Node, NodeEvent
from meshchat.store.mailbox import MailboxLimits
from meshchat.store.messenger import StatusChanged, StoreProblem
from meshchat.store.storage import OutboxStatus
from meshchat.wire import message_id

__all__ = ["MAX_STDIN_LINE", "SEND_TIMEOUT", "run_node", "run_send"]

#: Seconds ``meshchat send`` waits for a peer on the recipient's inbox shard before giving up.
SEND_TIMEOUT = 15.0

#: Longest line accepted on standard input for publishing, bytes: what one RPC may carry with room to
#: spare (a longer line is refused with a ``refused`` event, not cut).
MAX_STDIN_LINE = 60 * 1024


class _Printer:
    """Writes events as JSON lines or as text, flushing each so pipes see them at once."""

    def __init__(self, out: TextIO, *, json_lines: bool) -> None:
        self._out = out
        self._json = json_lines

    def event(self, kind: str, text: str, **fields: object) -> None:
        if self._json:
            line = json.dumps({"event": kind, **fields}, ensure_ascii=False)
        else:
            line = f"{kind:18s} {text}"
        self._out.write(line + "\n")
        self._out.flush()


class _ChatPrinter(_Printer):
    """``meshchat chat`` on a terminal: a conversation, not a log. Messages as ``HH:MM:SS name: text``
    with names in colour (rich), your own lines as ``you → name``, everything else dimmed."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, json_lines=False)
        self._console = Console(file=out, highlight=False, soft_wrap=True)

    def event(self, kind: str, text: str, **fields: object) -> None:
        now = time.strftime("%H:%M:%S")
        if kind == "direct":
            who = fields.get("contact") or str(fields.get("sender", ""))[-8:]
            body = base64.b64decode(str(fields.get("data", ""))).decode("utf-8", errors="replace")
            self._console.print(f"[dim]{now}[/] [bold cyan]{escape(str(who))}[/]: {escape(body)}")
        elif kind == "sent":
            body = base64.b64decode(str(fields.get("data", ""))).decode("utf-8", errors="replace")
            self._console.print(f"[dim]{now} you → {escape(text.removeprefix('to '))}: {escape(body)}[/]")
        else:
            self._console.print(f"[dim]{now} {escape(kind)}: {escape(text)}[/]")


def _describe(event: NodeEvent, printer: _Printer) -> None:
    match event:
        case DirectMessage(sender=sender, contact=contact, body=body, sent_at_ms=sent_at, message_id=mid):
            who = contact.name if contact is not None else sender.peer_id
            printer.event(
                "direct",
                f"from {who}: {body.decode('utf-8', errors='replace')}",
                sender=sender.peer_id,
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
        case StoreProblem(error=error):
            printer.event("store_problem", str(error), error=str(error))
        case MessageDelivered(topic=topic, message_id=mid, data=data, source=source):
            text = data.decode("utf-8", errors="replace")
            printer.event(
                "message",
                f"[{topic}] from {source}: {text}",
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


async def _print_events(node: Node, printer: _Printer) -> None:
    async for event in node.events():
        _describe(event, printer)


LineHandler = Callable[[bytes], Awaitable[None]]


async def _read_stdin(handle: LineHandler, printer: _Printer) -> None:
    """Hand each line of standard input (without its line ending) to ``handle``, until end of input."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                await _checked(handle, line.rstrip(b"\r"), printer)
            if len(buffer) > MAX_STDIN_LINE:
                printer.event("refused", f"a line over {MAX_STDIN_LINE:,} bytes", limit=MAX_STDIN_LINE)
                buffer = b""
        if buffer:
            await _checked(handle, buffer, printer)
    printer.event("stdin_closed", "standard input closed")


async def _checked(handle: LineHandler, line: bytes, printer: _Printer) -> None:
    if len(line) > MAX_STDIN_LINE:
        printer.event("refused", f"a line over {MAX_STDIN_LINE:,} bytes", limit=MAX_STDIN_LINE)
        return
    try:
        await handle(line)
    except MeshchatError as exc:
        printer.event("refused", str(exc), error=type(exc).__name__)


async def _publish_line(node: Node, topic: str, line: bytes, printer: _Printer) -> None:
    await node.publish(topic, line)
    if topic in node.driver.router.config.signed_topics:  # its id is author + seqno, chosen by the router
        printer.event("published", f"[{topic}] {len(line)} bytes, signed", topic=topic)
    else:
        printer.event(
            "published", f"[{topic}] {len(line)} bytes", topic=topic, message_id=message_id(line).hex()
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
) -> None:
    """Run a node until SIGINT or SIGTERM, printing its events to ``out``.

    With ``read_stdin`` each input line is published to the first topic, or, with ``chat_with``, sent
    sealed to that contact. With ``mailbox_limits`` the node serves as a mailbox within them; it stores
    its own messages on ``mailboxes`` (and on any mailbox it meets).
    """
    printer = (
        _ChatPrinter(out)
        if chat_with is not None and not json_lines
        else _Printer(out, json_lines=json_lines)
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
    ) as node:
        contact = node.contacts.find(chat_with) if chat_with is not None else None
        printer.event(
            "listening",
            f"{node.peer_id} on {', '.join(node.listen_addrs)}",
            peer_id=node.peer_id,
            addrs=node.listen_addrs,
        )
        for relay_address in reserve:
            relayed = await node.reserve(relay_address)
            printer.event("reserved", f"reachable through {relayed}", addr=relayed)
        for topic in topics:
            await node.subscribe(topic)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_print_events, node, printer)
                if contact is not None:

                    async def send(line: bytes) -> None:
                        handle = await node.send(contact, line)
                        printer.event(
                            "sent",
                            f"to {contact.name}",
                            to=contact.peer_id,
                            message_id=handle.message_id.hex(),
                            data=base64.b64encode(line).decode("ascii"),
                        )

                    nursery.start_soon(_read_stdin, send, printer)
                elif read_stdin:

                    async def publish(line: bytes) -> None:
                        await _publish_line(node, topics[0], line, printer)

                    nursery.start_soon(_read_stdin, publish, printer)
                async for signum in signals:
                    printer.event("stopped", signal.Signals(signum).name, signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break
        held = node.mailbox_statistics()
        if held is not None:
            printer.event(
                "mailbox",
                f"holding {held.items} envelopes ({held.bytes:,} bytes); refused {held.refused or 'none'}",
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
        printer.event(
            "statistics",
            f"delivered {stats.router.delivered}, drops {drops or 'none'}, router {router_drops or 'none'}",
            delivered=stats.router.delivered,
            drops=drops,
            router_drops=router_drops,
        )


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
    peer on the contact's inbox shard has it (or, given ``mailboxes``, once a mailbox stored it).

    Raises ``NetworkError`` if that does not happen within ``SEND_TIMEOUT``; the message stays queued
    in the outbox and ``meshchat node`` on this profile goes on retrying it.
    """
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        contact = node.contacts.find(to)
        handle = await node.send(contact, text)
        with trio.move_on_after(SEND_TIMEOUT):
            await handle.wait_until(OutboxStatus.STORED if mailboxes else OutboxStatus.RELAYED)
        status = handle.status
        if status in (OutboxStatus.QUEUED, OutboxStatus.FAILED):
            why = handle.error or f"nobody on their inbox shard or a mailbox took it in {SEND_TIMEOUT:g} s"
            raise NetworkError(
                f"send to {contact.name}",
                f"{why}; message {handle.message_id.hex()} is {status.value} in the outbox"
                + ("" if status is OutboxStatus.FAILED else " and `meshchat node` retries it"),
            )
        printer.event(
            "sent",
            f"to {contact.name}: {status.value}",
            to=contact.peer_id,
            message_id=handle.message_id.hex(),
            status=status.value,
        )
