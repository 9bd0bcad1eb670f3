"""``BufferBudget`` and ``FrameReader``: what a reader holds is charged exactly, refused beyond a peer's
share or the total, and given back whatever ends the stream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshchat.errors import DecodeError, QuotaExceeded, TooLarge
from meshchat.gossip.rpc import frame
from meshchat.net.budget import BufferBudget, FrameReader


def test_a_peer_share_and_the_total_are_both_enforced() -> None:
    budget = BufferBudget(per_peer=100, total=150)
    budget.resize("a", 0, 100)
    with pytest.raises(QuotaExceeded, match="peer a"):
        budget.resize("a", 100, 101)
    budget.resize("b", 0, 50)
    with pytest.raises(QuotaExceeded, match="all peers"):
        budget.resize("c", 0, 1)
    assert budget.statistics().buffered == 150 and budget.statistics().refused == 2
    budget.resize("a", 100, 0)
    budget.resize("c", 0, 100)  # room again once a gave its bytes back
    assert (budget.held("a"), budget.held("c"), budget.statistics().peers) == (0, 100, 2)
    assert budget.statistics().peak == 150


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=20),
)
def test_a_reader_holds_exactly_the_unfinished_frame_whatever_the_chunking(
    bodies: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(frame(body) for body in bodies) + frame(b"x" * 200)[:57]  # ends mid-frame
    budget = BufferBudget(per_peer=10_000, total=10_000)
    reader = FrameReader(budget, "p", max_frame_size=1000)
    got: list[bytes] = []
    position, index = 0, 0
    while position < len(wire):
        step = cuts[index % len(cuts)]
        got += reader.feed(wire[position : position + step])
        position, index = position + step, index + 1
        assert budget.held("p") == reader.held
    assert got == bodies
    assert reader.held == 57 and reader.pending
    reader.release()
    reader.release()  # idempotent
    assert budget.statistics().buffered == 0


def test_a_refused_or_broken_stream_gives_everything_back() -> None:
    budget = BufferBudget(per_peer=64, total=1000)
    reader = FrameReader(budget, "p", max_frame_size=1000)
    reader.feed(frame(b"y" * 100)[:40])
    with pytest.raises(QuotaExceeded):
        reader.feed(b"y" * 40)
    assert budget.statistics().buffered == 0 and reader.held == 0
    other = FrameReader(budget, "q", max_frame_size=10)
    with pytest.raises(TooLarge):
        other.feed(frame(b"z" * 11))
    other.release()
    with pytest.raises(DecodeError):
        FrameReader(budget, "r", max_frame_size=10).feed(b"\x80" * 12)
    assert budget.statistics().buffered == 0
