"""A slow or stopped reader of ``meshchat node``'s standard output slows the output, never the node.

The unit tests put an ``OutputQueue`` on a fake ``out`` whose ``write`` blocks (in the writer's worker
thread) until the test releases it. The process test runs ``meshchat node --json --topic lobby`` with its
stdout pipe unread while a peer floods the topic: the node must still relay another peer's message (the
old printer wrote inside the event loop, which then froze once the pipe was full).
"""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from meshchat.cli.runner import OUTPUT_DRAIN, OutputQueue, _print_events, _Printer
from meshchat.identity import Identity, save_identity
from meshchat.inbox import DirectMessage
from meshchat.net import MessageDelivered
from meshchat.node import KEY_FILE, Node

#: Seconds any one wait may take before the test fails (nothing here waits on the clock to pass).
WAIT = 30.0
#: Bytes the queue may hold in the unit tests: a few lines, so a handful of notices overflow it.
SMALL = 1000


class BlockingOut(io.StringIO):
    """An ``out`` with no file descriptor whose ``write`` blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(WAIT)  # bounded: a broken test fails instead of hanging
        return super().write(text)


def direct(number: int) -> DirectMessage:
    alice = Identity(b"\x07" * 32).public
    body = b"direct %d " % number + b"x" * 200
    return DirectMessage(
        sender=alice,
        contact=None,
        body=body,
        sent_at_ms=0,
        message_id=bytes([number]) * 32,
        seq=number,
        number=number,
    )


def lines_of(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_blocked_writer_never_blocks_the_loop_drops_notices_and_keeps_every_direct() -> None:
    out = BlockingOut()
    output = OutputQueue(out, limit=SMALL)
    printer = _Printer(output, json_lines=True)
    events_send, events = trio.open_memory_channel[Any](100)

    class FakeNode:
        def events(self) -> trio.MemoryReceiveChannel[Any]:
            return events

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.run)
            printer.event("listening", "me", peer_id="me", addrs=[])
            with trio.fail_after(WAIT):
                await trio.to_thread.run_sync(out.entered.wait, WAIT)  # the writer is stuck in write

            # The loop runs on: another task answers 100 pings while the write is blocked.
            ping_send, ping_receive = trio.open_memory_channel[int](0)

            async def echo() -> None:
                async for n in ping_receive:
                    assert n >= 0

            nursery.start_soon(echo)
            with trio.fail_after(WAIT):
                for n in range(100):
                    await ping_send.send(n)

            # Live notices: put returns at once; those beyond the bound are counted, not queued.
            notices = 40
            for n in range(notices):
                printer.event("message", f"notice {n}", topic="lobby", data="y" * 80)
            assert 0 < output.dropped < notices
            kept_notices = notices - output.dropped

            # Direct messages: none dropped; the printing task waits for room instead of taking more.
            async with trio.open_nursery() as printing:
                printing.start_soon(_print_events, FakeNode(), printer, output)
                for number in range(1, 31):
                    await events_send.send(direct(number))
                await trio.testing.wait_all_tasks_blocked()
                assert events.statistics().current_buffer_used > 0  # held back while it waits for room
                assert output.dropped == notices - kept_notices  # no direct counted as dropped
                assert out.getvalue() == ""  # nothing got past the blocked write yet
                out.release.set()
                await events_send.aclose()  # the printing task ends once it has taken every event
            with trio.fail_after(WAIT):
                await output.drain()
            nursery.cancel_scope.cancel()
    finally:
        out.release.set()

    written = lines_of(out)
    assert written[0]["event"] == "listening"
    assert [e["data"] for e in written if e["event"] == "message"] == ["y" * 80] * kept_notices
    numbers = [e["number"] for e in written if e["event"] == "direct"]
    assert numbers == list(range(1, 31))  # every one, in order
    assert len(written) == 1 + kept_notices + 30


async def test_a_reader_that_never_reads_holds_the_exit_only_for_the_drain(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    out = BlockingOut()
    output = OutputQueue(out, limit=SMALL)
    printer = _Printer(output, json_lines=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.run)
            printer.event("listening", "me", peer_id="me", addrs=[])
            await trio.to_thread.run_sync(out.entered.wait, WAIT)
            printer.event("message", "one", data="a")
            printer.event("statistics", "totals", output_dropped=output.dropped)
            started = trio.current_time()
            await output.drain()
            assert trio.current_time() - started == pytest.approx(OUTPUT_DRAIN)
            nursery.cancel_scope.cancel()  # abandons the thread still blocked in write
    finally:
        out.release.set()
    assert output.dropped == 3  # the line being written and the two queued behind it
    assert "3 lines of output were not written" in capsys.readouterr().err


async def test_a_reader_that_reads_gets_everything_before_the_exit() -> None:
    out = io.StringIO()
    output = OutputQueue(out, limit=SMALL)
    printer = _Printer(output, json_lines=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(output.run)
        for n in range(5):
            printer.event("message", f"line {n}")
        with trio.fail_after(WAIT):
            await output.drain()
        nursery.cancel_scope.cancel()
    assert [line.split()[-1] for line in out.getvalue().splitlines()] == ["0", "1", "2", "3", "4"]
    assert output.dropped == 0


# --- a real node with its standard output unread --------------------------------------------------

LOCAL = "/ip4/127.0.0.1/tcp/0"
TOPIC = "lobby"
#: Messages the flooding peer publishes, and their size: about 1.9 MB of JSON lines, more than
#: ``OUTPUT_BUFFER`` plus a 64 KiB pipe, so the old printer blocked well before the end.
FLOOD, FLOOD_SIZE = 300, 4096


@pytest.mark.slow
@pytest.mark.parametrize("read_at_last", [False, True], ids=["never-read", "read-at-last"])
async def test_a_node_whose_stdout_is_not_read_still_relays_while_a_peer_floods(
    tmp_path: Path, read_at_last: bool
) -> None:
    """Never read: SIGTERM still ends it, after the bounded drain. Read at last (after the flood):
    everything queued comes out and the dropped notices are counted in ``statistics``."""
    profile = tmp_path / "node"
    profile.mkdir()
    save_identity(profile / KEY_FILE, Identity(b"\x51" * 32), None)
    args = [sys.executable, "-m", "meshchat", "node", "--profile", str(profile), "--json"]
    args += ["--listen", LOCAL, "--topic", TOPIC]
    with (tmp_path / "stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        head = b""
        with trio.fail_after(WAIT):
            while b"\n" not in head:
                head += await process.stdout.receive_some(1)  # only the first line: nothing after it
        address = json.loads(head)["addrs"][0]
        async with (
            Node.open(identity=Identity(b"\x52" * 32), listen=[LOCAL]) as flooder,
            Node.open(identity=Identity(b"\x53" * 32), listen=[LOCAL]) as speaker,
        ):
            for node in (flooder, speaker):
                await node.subscribe(TOPIC)
                await node.connect(address)
            node_id = address.split("/p2p/")[1]
            with trio.fail_after(WAIT):
                for node in (flooder, speaker):
                    await node.wait_for(lambda n=node: node_id in n.driver.router.mesh.get(TOPIC, ()))
            with trio.fail_after(WAIT):
                for n in range(FLOOD):
                    await flooder.publish(TOPIC, b"%05d" % n + b"f" * (FLOOD_SIZE - 5))
            # The node reads the flood and prints into a pipe nobody reads; the speaker's message must
            # still get through it to the flooder.
            await speaker.publish(TOPIC, b"still there?")
            with trio.fail_after(WAIT):
                async for event in flooder.events():
                    if isinstance(event, MessageDelivered) and event.data == b"still there?":
                        break

        rest = b""

        async def read_rest() -> None:
            nonlocal rest
            assert process.stdout is not None
            while chunk := await process.stdout.receive_some(1 << 16):
                rest += chunk

        async with trio.open_nursery() as nursery:
            if read_at_last:
                nursery.start_soon(read_rest)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(OUTPUT_DRAIN + WAIT):
                await process.wait()
        assert process.returncode == 0
        await read_rest()
        complete = rest.split(b"\n")[:-1]  # the last may be cut by an abandoned write
        events = [json.loads(line) for line in complete]
        messages = [base64.b64decode(e["data"]) for e in events if e["event"] == "message"]
        flood = [int(m[:5]) for m in messages if len(m) == FLOOD_SIZE]
        assert flood[0] == 0 and flood == sorted(flood)  # printed in the order delivered
        notice = "lines of output were not written"
        if read_at_last:
            assert events[-1]["event"] == "statistics"
            assert events[-1]["output_dropped"] > 0 and len(flood) + events[-1]["output_dropped"] >= FLOOD
            assert notice not in (tmp_path / "stderr").read_text()
        else:
            assert notice in (tmp_path / "stderr").read_text()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(WAIT) as scope:
            scope.shield = True
            await process.wait()
