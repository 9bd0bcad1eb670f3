"""Several processes share one simulation run: conservative parallel discrete-event simulation.

A run of 10,000 nodes spends its time in the routers (~18 us per message copy in CPython), and one
process uses one core. With ``Scenario(workers=W)`` the parent builds the world, then forks W worker
processes. Each inherits the whole world (copy on write) and runs the routers of one part of the nodes:
``owners`` cuts the graph into W equal parts with few links between them (contiguous index blocks,
refined by a greedy Kernighan-Lin pass), and ``Network.share`` makes a worker's network run its part.
Every event is then either

- local to the node it concerns (arrivals, timers, sends): only the node's worker has it; or
- replayed by every worker from the same schedule with the same random draws (boot, publishing: who
  publishes what, sealed identically; churn, the partition, attacks): every worker agrees on who is
  online and what was published, and only the node's worker hands its router the input
  (``Simulation._input`` ignores the others' nodes).

**Lookahead.** Nothing a worker does reaches another worker sooner than the shortest link delay L
(``Scenario.min_latency``): an RPC arrives at least L after it was sent, a dial completes after four
delays, and a close takes effect at both ends L after a router asked for it
(``Simulation.close_delay``). So the workers run in windows of L virtual seconds. In each window a
worker processes its events due before the window's end, collecting what it sent to other workers'
nodes (``Network.outgoing``) and the connections it opened or closed with them (``Network.notes``);
then the workers swap these and push what they got onto their own queues. All of it is due at or
after the window's end, so nothing lands in a worker's past: the window ends are built by repeated
addition of L, and since rounding is monotonic, ``now + delay`` (now in the window, delay >= L) is
never below the next end.

**Determinism.** Swaps happen in a fixed order and their contents are pushed in the order they were
sent, so the same scenario (seed and worker count included) gives the same results. Another worker
count is another, equally valid, run: simultaneous events are ordered differently, and each worker
draws link delays, loss and jitter from its own streams.

What it is not: worth it for small runs (every window costs a swap of ~0.1-1 ms; 10,000 nodes took
390 s on two workers and 810-900 s on one), or exact where two workers meet one link's open and close
at the very same virtual instant (equal floating-point times): they may order the two differently,
leaving the link open at one end only; what is sent over it is then counted as ``closed``.

Why by hand: the Python simulation libraries (SimPy, salabim) run in one process; this barrier form of
conservative synchronisation is a few dozen lines over the simulator's own queue. Workers are
``multiprocessing`` processes started by ``fork`` (the world is inherited, not pickled), so several
workers need a platform with fork (Linux, macOS); elsewhere the run raises ``ScenarioError``.

``meshchat.sim.engine``'s ``Simulation.run`` calls ``run_parallel``; this module sees the simulation
only as a ``meshchat.sim.running.SharedSimulation`` and never imports the engine.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import pickle
import select
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING

from meshchat.gossip import RpcReceived
from meshchat.gossip.messages import RPC, PubMessage
from meshchat.sim.clock import EventKind
from meshchat.sim.errors import ScenarioError, WorkerFailed
from meshchat.sim.metrics import MetricsShare
from meshchat.sim.network import Link, LinkDrop, Outgoing
from meshchat.sim.running import PROGRESS_STEPS, RouterFigures, SharedSimulation, collector_paused
from meshchat.sim.world import component_rng

if TYPE_CHECKING:
    from meshchat.sim.results import Results

__all__ = ["WorkerShare", "owners", "run_parallel"]

#: Seconds the parent waits for a worker to exit after it reported (or after a failure).
JOIN_TIMEOUT = 30.0
#: Most refinement passes per pair of workers in ``owners`` (10,000 nodes settle in ~13).
REFINE_PASSES = 30
#: Seconds between the parent's checks that silent workers are still alive.
POLL_SECONDS = 1.0
#: Seconds a worker waits for another's traffic before it gives up (a window of 10,000 nodes takes
#: a fraction of a second; only a stuck worker takes this long).
SWAP_TIMEOUT = 600.0


@dataclass(slots=True, kw_only=True)
class WorkerShare:
    """What one worker measured, sent to the parent when its part of the run is over."""

    #: The node indices it ran, ascending.
    owned: list[int]
    #: Its honest nodes' measurements.
    metrics: MetricsShare
    #: Its routers' figures.
    figures: RouterFigures
    #: Network drops in its part, by reason.
    drops: dict[LinkDrop, int]
    #: (bytes sent, RPCs sent) of each node it ran, in ``owned`` order.
    sent: list[tuple[int, int]]
    #: Validator verdicts of its routers.
    accepted: int
    rejected: int
    #: Events it processed.
    events: int
    #: Its honest routers' disconnects of attackers.
    disconnects_of_attackers: int
    #: Honest messages without an online publisher (the same in every worker).
    unpublished: int
    #: Its clock at the end.
    now: float


def owners(adjacency: Sequence[Sequence[int]], workers: int) -> list[int]:
    """The worker of each node (``adjacency[i]``: node i's neighbours): equal parts, few links between.

    Starts from contiguous blocks, then, for each pair of parts, swaps pairs of nodes between them
    while a swap cuts links between the two (a greedy Kernighan-Lin pass), until a pass changes
    nothing or after ``REFINE_PASSES``. On the random 6-regular graph of 10,000 nodes the links
    between two workers fall from 50 % to 28 % (in 0.1 s), and with them the traffic the workers swap.
    """
    count = len(adjacency)
    owner = [index * workers // count for index in range(count)]
    for first, second in itertools.combinations(range(workers), 2):
        for _ in range(REFINE_PASSES):
            if not _refine(adjacency, owner, first, second):
                break
    return owner


def _refine(adjacency: Sequence[Sequence[int]], owner: list[int], first: int, second: int) -> bool:
    """One greedy pass of swaps between parts ``first`` and ``second``; True if it swapped any."""

    def gain(node: int, to: int) -> int:
        """Links to ``to`` minus links within the node's own part: what moving it there cuts."""
        own, total = owner[node], 0
        for other in adjacency[node]:
            part = owner[other]
            total += 1 if part == to else -1 if part == own else 0
        return total

    def ranked(part: int, to: int) -> list[int]:
        """The nodes of ``part``, those that gain most by moving to ``to`` first."""
        gains = {node: gain(node, to) for node in range(len(owner)) if owner[node] == part}
        return sorted(gains, key=lambda node: -gains[node])

    swapped = False
    for a, b in zip(ranked(first, second), ranked(second, first), strict=False):
        if gain(a, second) + gain(b, first) - 2 * (b in adjacency[a]) <= 0:
            break  # the rest ranked lower; the next pass ranks them again
        owner[a], owner[b] = second, first
        swapped = True
    return swapped


def run_parallel(sim: SharedSimulation, progress: Callable[[float], None] | None) -> Results:
    """Run ``sim`` (built, not started) in ``sim.scenario.workers`` processes; return its results."""
    workers = sim.scenario.workers
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ScenarioError("workers", "several workers need the fork start method (Linux, macOS)")
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    owner = owners(sim.world.adjacency(), workers)
    pipes = {pair: socket.socketpair() for pair in itertools.combinations(range(workers), 2)}
    reports = [context.Pipe(duplex=False) for _ in range(workers)]
    every_end: list[socket.socket | Connection] = [end for ends in pipes.values() for end in ends]
    every_end += [end for ends in reports for end in ends]
    processes = []
    for worker in range(workers):
        peers: dict[int, socket.socket] = {}
        for (low, high), (low_end, high_end) in pipes.items():
            if worker == low:
                peers[high] = low_end
            elif worker == high:
                peers[low] = high_end
        processes.append(
            context.Process(
                target=_work,
                args=(sim, worker, owner, peers, reports[worker][1], every_end),
                name=f"meshchat-sim-worker-{worker}",
                daemon=True,
            )
        )
    try:
        with collector_paused():  # the workers inherit a paused collector and keep it paused
            for process in processes:
                process.start()
        for ends in pipes.values():
            for end in ends:
                end.close()
        for _, sending in reports:
            sending.close()
        shares = _collect([receiving for receiving, _ in reports], processes, progress)
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.kill()  # a failed run: the others would only wait for the failed one
        raise
    finally:
        for process in processes:
            if process.pid is None:
                continue  # never started (starting an earlier one failed)
            process.join(JOIN_TIMEOUT)  # they exit right after reporting
            if process.is_alive():
                process.kill()
                process.join(JOIN_TIMEOUT)
        for receiving, _ in reports:
            receiving.close()
    if progress is not None:
        progress(1.0)
    _merge(sim, shares)
    return sim.results(wall_seconds=time.perf_counter() - started)


def _collect(
    reports: list[Connection],
    processes: Sequence[multiprocessing.process.BaseProcess],
    progress: Callable[[float], None] | None,
) -> list[WorkerShare]:
    """Wait for every worker's share, passing worker 0's progress on; raise if one fails or dies."""
    shares: list[WorkerShare | None] = [None] * len(reports)
    pending = dict(zip(reports, range(len(reports)), strict=True))
    while pending:
        ready = wait(list(pending), timeout=POLL_SECONDS)
        if not ready:
            for silent, worker in pending.items():
                code = processes[worker].exitcode
                if code is not None and not silent.poll():
                    raise WorkerFailed(worker, f"it exited (code {code}) without a result")
        for conn in ready:
            assert isinstance(conn, Connection)
            worker = pending[conn]
            try:
                kind, payload = conn.recv()
            except EOFError:
                raise WorkerFailed(worker, "it exited without a result (killed, or out of memory?)") from None
            if kind == "progress":
                if progress is not None:
                    progress(payload)
            elif kind == "done":
                shares[worker] = payload
                del pending[conn]
            else:
                raise WorkerFailed(worker, payload)
    return [share for share in shares if share is not None]


def _merge(sim: SharedSimulation, shares: list[WorkerShare]) -> None:
    """Make the parent's (unrun) simulation hold the whole run's measurements."""
    sim.metrics.merge([share.metrics for share in shares])
    figures = shares[0].figures
    for share in shares[1:]:
        figures.add(share.figures)
    sim.merged_figures = figures
    nodes = sim.network.nodes
    for reason in LinkDrop:
        sim.network.drops[reason] = sum(share.drops[reason] for share in shares)
    for share in shares:
        for index, (sent_bytes, rpcs) in zip(share.owned, share.sent, strict=True):
            nodes[index].bytes_sent = sent_bytes
            nodes[index].rpcs_sent = rpcs
    sim.world.validator.accepted = sum(share.accepted for share in shares)
    sim.world.validator.rejected = sum(share.rejected for share in shares)
    sim.events = sum(share.events for share in shares)
    sim.disconnects_of_attackers = sum(share.disconnects_of_attackers for share in shares)
    sim.world.unpublished = shares[0].unpublished
    sim.clock.now = shares[0].now


# --- in a worker process ----------------------------------------------------------------------------


def _work(  # noqa: PLR0917 (a process target: its arguments are positional)
    sim: SharedSimulation,
    worker: int,
    owner: list[int],
    peers: dict[int, socket.socket],
    report: Connection,
    every_end: list[socket.socket | Connection],
) -> None:
    """A worker's whole life: run its part, send its share (or what went wrong) to the parent."""
    mine = {id(report), *map(id, peers.values())}
    for end in every_end:
        if id(end) not in mine:
            end.close()  # inherited by fork: held open here, it would hide a dead worker's EOF
    try:
        share = _run_part(sim, worker, owner, peers, report)
        report.send(("done", share))
    except BaseException:  # everything goes to the parent, which raises it
        report.send(("error", traceback.format_exc()))
    finally:
        report.close()
        for conn in peers.values():
            conn.close()


def _run_part(
    sim: SharedSimulation, worker: int, owner: list[int], peers: dict[int, socket.socket], report: Connection
) -> WorkerShare:
    scenario, clock, network = sim.scenario, sim.clock, sim.network
    network.share(
        worker=worker,
        workers=scenario.workers,
        owner=owner,
        rngs=tuple(
            component_rng(scenario.seed, f"{name}/worker-{worker}") for name in ("latency", "loss", "jitter")
        ),
    )
    channels = {other: _Channel(peers[other]) for other in sorted(peers)}  # swapped in this order
    step = scenario.min_latency
    end = clock.at(scenario.duration)
    report_every = scenario.duration / PROGRESS_STEPS
    next_report = clock.start + report_every
    boundary = clock.now
    with collector_paused():
        while (boundary := boundary + step) < end:
            sim.run_to(math.nextafter(boundary, -math.inf))
            for other, channel in channels.items():
                _swap(sim, other, channel)
            if worker == 0 and boundary >= next_report:
                report.send(("progress", min(1.0, (boundary - clock.start) / scenario.duration)))
                next_report += report_every
        sim.run_to(end)
    owned = [index for index, part in enumerate(owner) if part == worker]
    honest = [index for index in owned if index < scenario.nodes]
    nodes = network.nodes
    return WorkerShare(
        owned=owned,
        metrics=sim.metrics.share(honest),
        figures=sim.router_figures(),
        drops=dict(network.drops),
        sent=[(nodes[index].bytes_sent, nodes[index].rpcs_sent) for index in owned],
        accepted=sim.world.validator.accepted,
        rejected=sim.world.validator.rejected,
        events=sim.events,
        disconnects_of_attackers=sim.disconnects_of_attackers,
        unpublished=sim.world.unpublished,
        now=clock.now,
    )


def _swap(sim: SharedSimulation, other: int, channel: _Channel) -> None:
    """Swap this window's traffic with worker ``other`` and queue what it sent to this worker's nodes."""
    network = sim.network
    outgoing = (network.outgoing[other].columns(), network.notes[other])
    network.outgoing[other] = Outgoing()
    network.notes[other] = []
    raw = channel.exchange(pickle.dumps(outgoing, protocol=pickle.HIGHEST_PROTOCOL))
    incoming = pickle.loads(raw)  # our own forked worker's bytes
    (times, dsts, srcs, refs, links, entries), notes = incoming
    nodes, push = network.nodes, sim.queue.push
    arrive = EventKind.ARRIVE
    built: list[RpcReceived | None] = [None] * len(entries)
    rpcs: dict[int, RPC] = {}  # one RPC object per forwarded message
    closed = 0
    for at, dst_index, src_index, ref, link_id in zip(times, dsts, srcs, refs, links, strict=True):
        dst = nodes[dst_index]
        link = dst.links.get(src_index)
        if link is None or link.id != link_id:
            closed += 1  # closed (or its receiver left) here since it was sent
            continue
        src = nodes[src_index]
        received = built[ref]
        if received is None:
            entry = entries[ref]
            if type(entry) is PubMessage:
                rpc = rpcs.get(id(entry))
                if rpc is None:
                    rpc = rpcs[id(entry)] = RPC(publish=(entry,))
                entry = RpcReceived(peer=src.peer_id, rpc=rpc)
            received = built[ref] = entry
        push(at, arrive, dst, src, received, link)
    network.drops[LinkDrop.CLOSED] += closed
    for kind, at, a, b, latency, link_id in notes:
        if kind == EventKind.OPEN:
            push(at, EventKind.OPEN, nodes[a], nodes[b], Link(latency, link_id))
        else:
            push(at, EventKind.CLOSE, nodes[a], nodes[b], link_id)


class _Channel:
    """One end of a socket pair between two workers, with the bytes read past the last frame."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray()

    def exchange(self, payload: bytes) -> bytes:
        """Send ``payload`` to the other worker while receiving its payload; return that.

        Both sides send at once and either payload may be larger than the socket buffers, so sending
        and receiving interleave (non-blocking socket, ``select``): with blocking sends, two large
        payloads would each wait for the other side to read. One thread: a sender thread cost more
        (its start, and the GIL's switch interval) than the whole exchange of a small window. The
        other side may already have sent its next frame: what is read past this one is kept.
        """
        sock, received = self.sock, self.buffer
        out = memoryview(len(payload).to_bytes(_LENGTH_BYTES, "little") + payload)
        expected = -1
        while True:
            if expected < 0 and len(received) >= _LENGTH_BYTES:
                expected = _LENGTH_BYTES + int.from_bytes(received[:_LENGTH_BYTES], "little")
            if not out and 0 <= expected <= len(received):
                break
            wanted = [sock] if expected < 0 or len(received) < expected else []
            readable, writable, _ = select.select(wanted, [sock] if out else [], [], SWAP_TIMEOUT)
            if not readable and not writable:
                raise TimeoutError(f"the other worker sent nothing for {SWAP_TIMEOUT:.0f} s")
            if writable:
                out = out[sock.send(out[:_CHUNK]) :]
            if readable:
                chunk = sock.recv(_CHUNK)
                if not chunk:
                    raise EOFError("the other worker closed its connection mid-run")
                received += chunk
        frame = bytes(received[_LENGTH_BYTES:expected])
        del received[:expected]
        return frame


_LENGTH_BYTES = 8
_CHUNK = 1 << 20
