"""The group simulation's inputs and outputs: ``GroupScenario``, ``GroupRun``, ``GroupResults``.

Split from ``meshchat.sim.group_sim`` (the driver) and ``meshchat.sim.group_runs`` (the four scripted
runs) so each module reads in one sitting; see ``group_sim``'s docstring for the model and
``group_runs``'s for what each run does and what each figure means.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from meshchat.groups.ops import MAX_GROUP_MEMBERS
from meshchat.store.messenger import StoreConfig

__all__ = ["GroupResults", "GroupRun", "GroupScenario"]


class GroupRun(Enum):
    """Which scripted run (``meshchat.sim.group_runs``)."""

    #: One admin creates the group, everyone joins, a few senders send; per-message fan-out figures.
    FANOUT = "fanout"
    #: Fan-out, then the admin removes one member and sends the next message: cost of a removal.
    REMOVAL = "removal"
    #: Messages flow while members leave or are removed and new ones are invited and join.
    CHURN = "churn"
    #: A 50/50 partition in which both sides change membership and send, then a heal.
    PARTITION = "partition"


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupScenario:
    """The knobs of one group run (times are virtual seconds)."""

    #: The scripted run.
    run: GroupRun = GroupRun.FANOUT
    #: Members of the group at creation (the admin included), at most ``MAX_GROUP_MEMBERS``.
    members: int = 1000
    #: Mailbox nodes, each a ``MailboxCore``.
    mailboxes: int = 6
    #: ``StoreConfig.mailbox_copies``.
    mailbox_copies: int = 3
    #: Group messages sent in the measured phase.
    messages: int = 20
    #: Distinct members sending them (in turn).
    senders: int = 3
    #: Seconds between two measured messages.
    interval: float = 3.0
    #: Fraction of the members that go (leave or are removed) during a churn run; as many join.
    churn: float = 0.05
    #: One-way delay of every link, uniform in ``(low, high)`` seconds.
    latency: tuple[float, float] = (0.05, 0.15)
    #: Probability that a gossip copy, a 1:1 copy, a mailbox request or response is lost.
    loss: float = 0.0
    #: ``StoreConfig.sync_interval``: seconds between periodic syncs with each mailbox.
    sync_interval: float = 600.0
    #: Longest wait for a phase to complete (everyone joined, converged), seconds.
    settle: float = 600.0
    #: Seconds simulated after the last message of a phase, for late copies and syncs.
    drain: float = 20.0
    #: How long a partition run stays split, seconds.
    partition_length: float = 300.0
    #: Seconds after which a mailbox call with a lost leg is reported failed.
    call_timeout: float = 10.0
    #: Seed of every random choice (and of every identity and nonce).
    seed: int = 1

    def __post_init__(self) -> None:
        low, high = self.latency
        checks = [
            (4 <= self.members <= MAX_GROUP_MEMBERS, f"members must be between 4 and {MAX_GROUP_MEMBERS}"),
            (self.mailboxes >= 2, "mailboxes must be at least 2 (a partition splits them)"),
            (1 <= self.mailbox_copies <= self.mailboxes, "mailbox_copies must be between 1 and mailboxes"),
            (self.messages >= 1, "messages must be at least 1"),
            (
                1 <= self.senders <= self.members // 4,
                "senders must be between 1 and a quarter of the members",
            ),
            (_finite(self.interval) and self.interval > 0, "interval must be positive"),
            (0 <= self.churn <= 0.25, "churn must be in [0, 0.25]"),
            (_finite(low) and 0 <= low <= high, "latency must be (low, high) with 0 <= low <= high"),
            (_finite(high) and 2 * high < self.call_timeout, "a round trip must fit in call_timeout"),
            (0 <= self.loss < 1, "loss must be in [0, 1)"),
            (_finite(self.sync_interval) and self.sync_interval > 0, "sync_interval must be positive"),
            (_finite(self.settle) and self.settle > 0, "settle must be positive"),
            (_finite(self.drain) and self.drain >= 0, "drain must not be negative"),
            (
                _finite(self.partition_length) and self.partition_length > 0,
                "partition_length must be positive",
            ),
        ]
        for ok, problem in checks:
            if not ok:
                raise ValueError(f"group scenario: {problem}")

    def store_config(self) -> StoreConfig:
        """The ``StoreConfig`` every user runs."""
        return StoreConfig(sync_interval=self.sync_interval, mailbox_copies=self.mailbox_copies)

    def to_dict(self) -> dict[str, object]:
        """The knobs as JSON-ready values."""
        out = dataclasses.asdict(self)
        out["run"] = self.run.value
        return out


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupResults:
    """The figures of one run. Everything but ``wall_seconds`` depends only on the scenario."""

    #: The scripted run.
    run: str
    #: The seed.
    seed: int
    #: Members at creation.
    members: int
    #: Measured group messages sent.
    messages: int
    #: Deliveries (message, member expected to read it) that happened / expected (see ``group_runs``).
    delivery_ratio: float | None
    #: Deliveries expected.
    expected: int
    #: Deliveries that happened (the member's core emitted ``GroupMessage``).
    delivered: int
    #: ``GroupMessage`` events for a message a member had already had (must be 0).
    duplicates: int
    #: Per measured message: seconds from its send until every expected member had decrypted it;
    #: ``mean``, ``p50``, ``p90``, ``p99``, ``max`` over the messages fully delivered.
    all_decrypted_s: Mapping[str, float | None]
    #: Per delivery: seconds from send to decryption (same keys).
    latency_s: Mapping[str, float | None]
    #: Envelope bytes members received during the measured phase (group copies, 1:1 copies, mailbox
    #: answers; control included) / (members x measured messages).
    bytes_per_member_per_message: float | None
    #: The same by path: ``group`` (topic copies), ``direct`` (1:1 copies: chain handouts, ops,
    #: receipts, the messenger's delivery receipts), ``mailbox`` (answers to stores and syncs).
    bytes_by_path: Mapping[str, float] | None
    #: Seconds from the creation until every invited member had joined.
    setup_s: float | None
    #: Envelope bytes members received during the setup, per member.
    setup_bytes_per_member: float | None
    #: What is specific to the run (removal cost, churn counts, partition convergence).
    details: Mapping[str, object]
    #: ``GroupsCore.statistics()`` summed over users.
    core_counts: Mapping[str, int]
    #: Messenger discards by reason, summed over users.
    discarded: Mapping[str, int]
    #: Mailbox calls made.
    mailbox_calls: int
    #: What the driver counted: mailbox calls by request (``calls_store``, ``calls_sync`` ...), copies
    #: sent (``group_copies``, ``direct_copies``), and what should stay 0: ``store_problems``,
    #: ``group_problems``, ``stale_deadlines``, ``control_to_stranger``, ``chats_received``.
    driver_counts: Mapping[str, int]
    #: 1:1 control messages sent (``SendControl``), by kind: ``ops``, ``chain``, ``receipt``.
    controls: Mapping[str, int]
    #: Events processed.
    events: int
    #: Virtual seconds simulated.
    virtual_seconds: float
    #: Wall-clock seconds the run took (the only figure that differs between identical runs).
    wall_seconds: float
    #: The scenario's knobs.
    parameters: Mapping[str, object]

    def to_dict(self, *, include_wall: bool = False) -> dict[str, object]:
        """The results as JSON-ready values; ``wall_seconds`` only with ``include_wall=True``."""
        out: dict[str, object] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if not include_wall:
            del out["wall_seconds"]
        return out

    def to_json(self, include_wall: bool = False, *, indent: int | None = None) -> str:
        """Sorted-key JSON, byte-identical for the same scenario unless ``include_wall=True``."""
        return json.dumps(self.to_dict(include_wall=include_wall), sort_keys=True, indent=indent)
