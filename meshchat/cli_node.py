"""``meshchat node``: a long-lived node on the real network, printing what happens.

The command line half (options, profile, passphrase) is in ``meshchat.cli``; this module runs the node:
it prints the PeerId and listen addresses first, then one line per event, as text or, with ``--json``,
as one JSON object per line (``listening``, ``peer_connected``, ``peer_disconnected``, ``message``,
``published``, ``stopped``) for scripts and tests. With ``--stdin`` every line read from standard input
is published to the first topic. SIGINT and SIGTERM stop the node cleanly.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from meshchat.identity import Identity
from meshchat.net import MessageDelivered, NetEvent, PeerJoined, PeerLeft
from meshchat.node import Node
from meshchat.wire import message_id

__all__ = ["MAX_STDIN_LINE", "run_node"]

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


def _describe(event: NetEvent, printer: _Printer) -> None:
    match event:
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


async def _publish_stdin(node: Node, topic: str, printer: _Printer) -> None:
    """Publish each line of standard input to ``topic`` (without its line ending)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                await _publish_line(node, topic, line.rstrip(b"\r"), printer)
            if len(buffer) > MAX_STDIN_LINE:
                printer.event("refused", f"a line over {MAX_STDIN_LINE:,} bytes", limit=MAX_STDIN_LINE)
                buffer = b""
        if buffer:
            await _publish_line(node, topic, buffer, printer)
    printer.event("stdin_closed", "standard input closed; still relaying")


async def _publish_line(node: Node, topic: str, line: bytes, printer: _Printer) -> None:
    if len(line) > MAX_STDIN_LINE:
        printer.event("refused", f"a line over {MAX_STDIN_LINE:,} bytes", limit=MAX_STDIN_LINE)
        return
    await node.publish(topic, line)
    if topic in node.driver.router.config.signed_topics:  # its id is author + seqno, chosen by the router
        printer.event("published", f"[{topic}] {len(line)} bytes, signed", topic=topic)
    else:
        printer.event(
            "published", f"[{topic}] {len(line)} bytes", topic=topic, message_id=message_id(line).hex()
        )


async def run_node(
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
) -> None:
    """Run a node until SIGINT or SIGTERM, printing its events to ``out``."""
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        identity=identity, listen=listen, bootstrap=bootstrap, mdns=mdns, signed_topics=signed_topics
    ) as node:
        printer.event(
            "listening",
            f"{node.peer_id} on {', '.join(node.listen_addrs)}",
            peer_id=node.peer_id,
            addrs=node.listen_addrs,
        )
        for topic in topics:
            await node.subscribe(topic)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_print_events, node, printer)
                if read_stdin:
                    nursery.start_soon(_publish_stdin, node, topics[0], printer)
                async for signum in signals:
                    printer.event("stopped", signal.Signals(signum).name, signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break
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
