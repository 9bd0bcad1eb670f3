"""Who sees which mailbox in the store-and-forward simulation: sides of a partition, carriers' rounds.

Split from ``meshchat.sim.store_sim`` (the driver) so the geography reads apart from the event loop.
A partition splits users and fixed mailboxes into sides: two halves (the original model, kept draw for
draw so earlier results stay byte-identical), or ``StoreScenario.groups`` shares (a region and the
rest; LAN-sized clusters in a whitelist shutdown). During it, a user sees the present mailboxes of its
own side; otherwise every present mailbox. A mailbox removed for good (``remove_mailboxes``) leaves
every view. Carriers visit the sides in turn, one step every ``carrier_period``: with two sides they
switch back and forth; with more they go round, spread out so that no two start on the same side
while there are sides enough.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Protocol

from meshchat.sim.store_scenario import StoreScenario

__all__ = ["Placed", "SideViews", "assign_sides", "carrier_start", "next_side", "side_of_ranks"]


class Placed(Protocol):
    """A user or a mailbox of the simulation: it has a side."""

    side: int


def side_of_ranks(count: int, shares: Sequence[float]) -> list[int]:
    """The side of each of ``count`` ranks: consecutive blocks, the k-th of ``shares[k] * count``
    (cumulative rounding, so the blocks add up to ``count`` exactly)."""
    bounds: list[int] = []
    total = 0.0
    for share in shares:
        total += share
        bounds.append(round(total * count))
    bounds[-1] = count
    sides: list[int] = []
    side = 0
    for rank in range(count):
        while rank >= bounds[side]:
            side += 1
        sides.append(side)
    return sides


def carrier_start(index: int, carriers: int, scenario: StoreScenario) -> int:
    """The side carrier number ``index`` (of ``carriers``) starts the partition on."""
    if scenario.groups is None:
        return index % 2  # the original model's rule
    return index * scenario.sides // carriers


def next_side(side: int, sides: int) -> int:
    """The side a carrier on ``side`` moves to next (the other one, with two)."""
    return (side + 1) % sides


def assign_sides(
    users: Sequence[Placed],
    fixed_mailboxes: Sequence[Placed],
    scenario: StoreScenario,
    rng: random.Random,
) -> None:
    """Put every user and fixed mailbox on a side of the partition, at random (``rng``)."""
    order = list(range(len(users)))
    rng.shuffle(order)
    fixed = list(fixed_mailboxes)
    if scenario.groups is None:  # two halves, alternating in a shuffled order (the original draws)
        for rank, index in enumerate(order):
            users[index].side = rank % 2
        rng.shuffle(fixed)
        for rank, mailbox in enumerate(fixed):
            mailbox.side = rank % 2
        return
    for index, side in zip(order, side_of_ranks(len(users), scenario.groups), strict=True):
        users[index].side = side
    rng.shuffle(fixed)
    for mailbox, side in zip(fixed, side_of_ranks(len(fixed), scenario.groups), strict=True):
        mailbox.side = side


class SideViews:
    """The mailboxes each side sees, and all present ones (``refresh`` after any move or removal)."""

    def __init__(self, sides: int) -> None:
        """Nothing present yet."""
        self.sides = sides
        #: Every present mailbox, in mailbox order.
        self.everything: tuple[str, ...] = ()
        #: The present mailboxes of each side, in mailbox order.
        self.by_side: tuple[tuple[str, ...], ...] = ((),) * sides

    def refresh(self, present: Iterable[tuple[str, int]]) -> None:
        """``present``: ``(peer id, side)`` of every mailbox not removed, in mailbox order."""
        placed = list(present)
        self.everything = tuple(peer for peer, _ in placed)
        self.by_side = tuple(tuple(peer for peer, side in placed if side == k) for k in range(self.sides))

    def view(self, side: int, *, partitioned: bool) -> tuple[str, ...]:
        """What a user on ``side`` sees (online)."""
        return self.by_side[side] if partitioned else self.everything
