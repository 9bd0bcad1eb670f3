"""The store-and-forward simulation's inputs and outputs: ``StoreScenario``, ``StoreResults``,
``SentMessage``.

Split from ``meshchat.sim.store_sim`` (which runs them) so each module reads in one sitting; see that
module's docstring for the model and what each figure means.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from meshchat.crypto import MAX_TTL
from meshchat.store.messenger import StoreConfig

__all__ = ["GROUP_SHARES_TOLERANCE", "SentMessage", "StoreResults", "StoreScenario"]

#: How far from 1 the ``groups`` shares may sum (``(1 / 3,) * 3`` is not exactly 1 in floats).
GROUP_SHARES_TOLERANCE = 1e-6
#: Knobs left out of ``to_dict`` while None (added after results were first published).
_ADDED_KNOBS = ("groups", "remove_mailboxes", "local_share", "stored_retry_max", "receipt_sync_window")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreScenario:
    """The knobs of one store-and-forward run (times are virtual seconds from the start)."""

    #: Users, each a ``Messenger``.
    users: int = 1000
    #: Mailbox nodes, each a ``MailboxCore`` (carriers included).
    mailboxes: int = 10
    #: How many of the mailboxes are carriers: they switch partition sides every ``carrier_period``.
    carriers: int = 0
    #: Messages sent.
    messages: int = 2000
    #: Seconds over which messages are sent (uniformly).
    duration: float = 3 * 3600.0
    #: Extra seconds simulated after ``duration``, for retries, returning users and the healed partition.
    drain: float = 6 * 3600.0
    #: Each message's time to live, seconds (also the receipts').
    ttl: int = 24 * 3600
    #: One-way delay of every link leg, uniform in ``(low, high)`` seconds.
    latency: tuple[float, float] = (0.05, 0.15)
    #: Probability that a mailbox request, a mailbox response or a gossip copy is lost.
    loss: float = 0.01
    #: Fraction of users that go offline at random times for random periods.
    churn: float = 0.3
    #: Mean of a churned user's offline period, seconds (exponential).
    offline_mean: float = 1800.0
    #: Mean of a churned user's online period between two offline ones, seconds (exponential).
    online_mean: float = 3600.0
    #: ``(at, heal)``: users and mailboxes split 50/50 (or per ``groups``) from ``at`` to ``heal`` (a
    #: ``heal`` after the end: a partition that does not heal within the run); None: no partition.
    partition: tuple[float, float] | None = (1800.0, 5400.0)
    #: Seconds between two side switches of a carrier during a partition.
    carrier_period: float = 600.0
    #: ``StoreConfig.sync_interval``: seconds between syncs with each mailbox.
    sync_interval: float = 120.0
    #: ``StoreConfig.retry_initial``: seconds before an unconfirmed message's first retry.
    retry_initial: float = 30.0
    #: ``StoreConfig.mailbox_copies``: mailboxes each message is stored on.
    mailbox_copies: int = 3
    #: Seconds after which a mailbox call with a lost leg is reported failed.
    call_timeout: float = 10.0
    #: A returning user gets a new ``Messenger`` on its old storage (a process restart), not the old one.
    restart_on_return: bool = False
    #: Seed of every random choice.
    seed: int = 1
    # Knobs added for the removal and censorship experiments (``meshchat.sim.store_experiments``);
    # ``to_dict`` lists them only when set, so the results of scenarios without them stay
    # byte-identical to those published before they existed.
    #: Shares of users and of fixed (non-carrier) mailboxes in each side of the partition, in order
    #: (a region and the rest; LANs); None: two halves. Carriers visit the sides in turn.
    groups: tuple[float, ...] | None = None
    #: ``(at, keep)``: at ``at`` every mailbox but ``keep`` (chosen at random) is removed for good,
    #: with what it holds; None: mailboxes never go.
    remove_mailboxes: tuple[float, int] | None = None
    #: Probability that a message's recipient is drawn from the sender's own side (a region, a LAN)
    #: rather than from everybody; None: from everybody (needs a partition to mean anything).
    local_share: float | None = None
    #: ``StoreConfig.stored_retry_max``; None: its default. With ``retry_initial`` at the TTL, a
    #: value of the TTL means a sender that sends once and never retries within it.
    stored_retry_max: float | None = None
    #: ``StoreConfig.receipt_sync_window``; None: its default (an hour of syncs every few seconds
    #: after a send, a mailbox appearing or a return, while receipts are awaited); 0: none (syncs every
    #: ``sync_interval``, after a short doubling burst), as a phone in the background would.
    receipt_sync_window: float | None = None

    def __post_init__(self) -> None:
        low, high = self.latency
        checks = [
            (self.users >= 2, "users must be at least 2"),
            (self.mailboxes >= 1, "mailboxes must be at least 1"),
            (0 <= self.carriers <= self.mailboxes, "carriers must be between 0 and mailboxes"),
            (self.messages >= 0, "messages must not be negative"),
            (_finite(self.duration) and self.duration > 0, "duration must be positive"),
            (_finite(self.drain) and self.drain >= 0, "drain must not be negative"),
            (0 < self.ttl <= MAX_TTL, f"ttl must be between 1 and {MAX_TTL} s"),
            (_finite(low) and 0 <= low <= high, "latency must be (low, high) with 0 <= low <= high"),
            (_finite(high) and 2 * high < self.call_timeout, "a round trip must fit in call_timeout"),
            (0 <= self.loss < 1, "loss must be in [0, 1)"),
            (0 <= self.churn <= 1, "churn must be in [0, 1]"),
            (_finite(self.offline_mean) and self.offline_mean > 0, "offline_mean must be positive"),
            (_finite(self.online_mean) and self.online_mean > 0, "online_mean must be positive"),
            (_finite(self.carrier_period) and self.carrier_period > 0, "carrier_period must be positive"),
            (_finite(self.sync_interval) and self.sync_interval > 0, "sync_interval must be positive"),
            (_finite(self.retry_initial) and self.retry_initial > 0, "retry_initial must be positive"),
            (self.mailbox_copies >= 1, "mailbox_copies must be at least 1"),
            (_finite(self.call_timeout) and self.call_timeout > 0, "call_timeout must be positive"),
        ]
        if self.partition is not None:
            at, heal = self.partition
            checks.append(
                (
                    _finite(at) and _finite(heal) and 0 <= at < heal,
                    "partition must be (at, heal) with 0 <= at < heal",
                )
            )
        checks += self._added_checks()
        for ok, problem in checks:
            if not ok:
                raise ValueError(f"store scenario: {problem}")

    def _added_checks(self) -> list[tuple[bool, str]]:
        checks: list[tuple[bool, str]] = []
        if self.groups is not None:
            checks.append(
                (
                    len(self.groups) >= 2
                    and all(_finite(g) and g > 0 for g in self.groups)
                    and abs(math.fsum(self.groups) - 1.0) < GROUP_SHARES_TOLERANCE,
                    "groups must be two or more positive shares summing to 1",
                )
            )
        if self.remove_mailboxes is not None:
            at, keep = self.remove_mailboxes
            checks.append((_finite(at) and at >= 0, "remove_mailboxes must be at a time >= 0"))
            checks.append((1 <= keep <= self.mailboxes, "remove_mailboxes must keep 1 to mailboxes"))
        if self.stored_retry_max is not None:
            checks.append(
                (
                    _finite(self.stored_retry_max) and self.stored_retry_max > 0,
                    "stored_retry_max must be positive",
                )
            )
        if self.receipt_sync_window is not None:
            checks.append(
                (
                    _finite(self.receipt_sync_window) and self.receipt_sync_window >= 0,
                    "receipt_sync_window must not be negative",
                )
            )
        if self.local_share is not None:
            checks.append((0 <= self.local_share <= 1, "local_share must be in [0, 1]"))
        return checks

    @property
    def sides(self) -> int:
        """How many sides the partition has."""
        return 2 if self.groups is None else len(self.groups)

    @property
    def end(self) -> float:
        """Virtual seconds simulated: ``duration + drain``."""
        return self.duration + self.drain

    def store_config(self) -> StoreConfig:
        """The ``StoreConfig`` every user runs."""
        config = StoreConfig(
            sync_interval=self.sync_interval,
            retry_initial=self.retry_initial,
            retry_max=max(StoreConfig().retry_max, self.retry_initial),
            mailbox_copies=self.mailbox_copies,
            ttl=self.ttl,
        )
        if self.stored_retry_max is not None:
            config = dataclasses.replace(config, stored_retry_max=self.stored_retry_max)
        if self.receipt_sync_window is not None:
            config = dataclasses.replace(config, receipt_sync_window=self.receipt_sync_window)
        return config

    def to_dict(self) -> dict[str, object]:
        """The knobs as JSON-ready values (the added ones only when set: see ``groups``)."""
        out = dataclasses.asdict(self)
        for name in _ADDED_KNOBS:
            if out[name] is None:
                del out[name]
        return out


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreResults:
    """The figures of one run. Everything but ``wall_seconds`` depends only on the scenario."""

    #: The seed.
    seed: int
    #: Users.
    users: int
    #: Mailboxes (carriers included).
    mailboxes: int
    #: Carriers among the mailboxes.
    carriers: int
    #: Messages sent (``send`` called).
    messages: int
    #: Messages not sent because no user was online.
    unsent: int
    #: Messages delivered to the recipient's app within their TTL / messages sent (None: none sent).
    delivery_ratio: float | None
    #: Messages delivered within their TTL.
    delivered: int
    #: No message reached an app twice (and none reached anybody but its recipient).
    delivered_exactly_once: bool
    #: Deliveries to an app beyond the first, over all messages.
    duplicates_to_app: int
    #: Send to first delivery to the recipient's app, seconds: ``mean``, ``p50``, ``p90``, ``p99``, ``max``.
    latency_s: Mapping[str, float | None]
    #: Send to the sender's first ``delivered`` status, seconds (same keys).
    receipt_latency_s: Mapping[str, float | None]
    #: Messages sent during the partition across it: ``sent``, ``delivered`` (within TTL),
    #: ``delivered_during_partition``.
    cross_partition: Mapping[str, int]
    #: Messages sent to a recipient offline at the time: ``sent``, ``delivered`` (within TTL).
    offline_recipients: Mapping[str, int]
    #: First deliveries by path: ``gossip`` or ``mailbox``.
    delivered_via: Mapping[str, int]
    #: Messages whose sender's outbox said delivered (or read) at the end / messages sent.
    receipts_ratio: float | None
    #: Final outbox status of every sent message, counted by status.
    statuses: Mapping[str, int]
    #: Mailbox calls made.
    mailbox_calls: int
    #: Mailbox calls by request: ``store``, ``sync`` (each reconciliation round), ``fetch``, ``delete``,
    #: ``withdraw`` (a sender taking back copies once the receipt is in).
    mailbox_calls_by_kind: Mapping[str, int]
    #: Delete requests that removed nothing (the sync found nothing of ours on the mailbox).
    empty_deletes: int
    #: Mailbox calls reported failed (``mailbox_failed``).
    mailbox_failures: int
    #: Failed calls by reason: ``lost`` (a leg lost: after ``call_timeout``), ``closed`` (the connection
    #: closed under it: user offline, partition, carrier moved).
    mailbox_failure_reasons: Mapping[str, int]
    #: Gossip copies sent (one hop to online subscribers on the publisher's side).
    gossip_copies: int
    #: Bytes of encoded mailbox requests and responses plus gossip copies, per user.
    bytes_per_user: float
    #: Storage failures the messengers reported (none expected: memory storage).
    store_problems: int
    #: Times a messenger's deadline did not move past ``on_timer`` at that deadline (see "Found").
    stale_deadlines: int
    #: Envelopes and answers the messengers discarded, by reason, summed over users (restarts included).
    discarded: Mapping[str, int]
    #: Envelopes for us that failed to open or verify, by error, summed over users (none expected).
    rejected: Mapping[str, int]
    #: Envelopes the mailboxes still hold at the end (delivered ones are deleted by their recipients'
    #: syncs; receipts wait for their senders' syncs).
    mailbox_items_at_end: int
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


@dataclass(slots=True, kw_only=True)
class SentMessage:
    """One message of the workload and what became of it (for tests; results summarise these)."""

    #: Its place in the workload, 0, 1, ...
    index: int
    #: Sender's user index.
    sender: int
    #: Recipient's user index.
    recipient: int
    #: Virtual seconds from the start when it was sent.
    sent_at: float
    #: Sent during the partition to a recipient on the other side.
    cross_partition: bool
    #: The recipient was offline when it was sent.
    recipient_offline: bool
    #: Virtual time of the first delivery to the recipient's app (None: never).
    delivered_at: float | None = None
    #: How the first delivery came: "gossip" or "mailbox".
    via: str = ""
    #: Deliveries to the recipient's app (1 is right; more is a duplicate).
    deliveries: int = 0
    #: Virtual time the sender first saw ``delivered`` (None: never).
    receipt_at: float | None = None
