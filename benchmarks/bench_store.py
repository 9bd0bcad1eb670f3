"""meshchat's store-and-forward on the real network: mailbox resync and outbox writes, in one run.

Run: python benchmarks/bench_store.py [--messages 10000] [--outbox-messages 2000] [--profile]

Every figure is measured twice in the same run: with plain sqlite stores and with stores encrypted at
rest (``SqliteStorage(path, key=store_key(identity))``, SQLCipher), and printed side by side with the
ratio encrypted / plain (1.0: encryption costs nothing; 0.8: it costs 20 %).

**Resync.** Three nodes in this process on 127.0.0.1 (TCP + Noise + yamux), each with its own sqlite
store (WAL, synchronous=FULL) in a temporary folder: a mailbox M, a sender A that stores on M only
(``mailbox_copies=1``) and a recipient B that is offline. A sends ``--messages`` 100-byte messages to
B's public key and waits until M has acknowledged every one (status STORED), then goes offline. B
then starts with M as its mailbox; the clock runs from B's ``Node.open`` to the moment both hold:

* B's application has received every message (``DirectMessage`` events, counted by message id, so a
  message delivered twice shows as duplicated and one never delivered as lost), and
* B's delivery receipts for all of them are durably stored on M for A. The benchmark knows A's key,
  so M's storage (a ``SqliteStorage`` subclass) opens each envelope M stores for A's inbox tags and
  ticks off the message ids its receipts name; nothing in meshchat is changed or patched for this.

That covers the whole path: dial, mailbox probe, reconciliation rounds, fetches, opening and
verifying every envelope, B's fsync'd accept, its sealed receipts, M's delete, the receipts' store.
All nodes share one thread, so M's work is inside the figure (on two machines it would not be).
B's application starts reading events when ``Node.open`` returns; the sync may start before that.
The time split comes from the same storage hooks (M's side: when the first sync, fetch, delete and
receipt store arrived; B's side: time spent in ``accept``, the fsync'd inbox write) and from
``store_statistics()``/``mailbox_statistics()``. For scale, the cost of opening the same envelopes
with ``open_envelope`` alone (no network, no storage) is measured afterwards.

**Outbox writes.** ``Messenger.send`` (seal, then one fsync'd ``outbox_add`` per message) into a fresh
``SqliteStorage``, against plain ``sqlite3`` in the same run: one single-row INSERT + COMMIT per row
of the same size (message id, recipient key, envelope-sized blob) into a table with the same pragmas
(WAL, synchronous=FULL). The two alternate in rounds, so disk weather hits both alike.
``outbox_ratio_vs_sqlite`` is outbox msgs/s over sqlite rows/s: 1.0 is bare sqlite's speed. The
encrypted outbox runs in the same rounds, into its own encrypted ``SqliteStorage``.

**Opening.** ``SqliteStorage(path)`` on the filled outbox files, plain and encrypted (a raw key: no
KDF; ``PRAGMA quick_check`` reads and so decrypts every page), and for scale the cost of a SQLCipher
passphrase key (PBKDF2, 256,000 iterations), which the raw key avoids.

**Resync, encrypted.** The same resync with all three stores encrypted, in fresh files.

The last line reads ``resync_msgs_per_s=… outbox_ratio_vs_sqlite=… lost=… duplicated=…`` followed by
the encrypted figures: ``outbox_encrypted_msgs_per_s=… outbox_encrypted_ratio=…
resync_encrypted_msgs_per_s=… resync_encrypted_ratio=… open_ms=… open_encrypted_ms=…`` (the lost and
duplicated counts add both resyncs).
With ``--profile`` the resync runs under cProfile and the top functions are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.lowlevel

from meshchat.crypto import open_envelope, seal
from meshchat.errors import MeshchatError
from meshchat.identity import Identity, KeyCache
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.encrypted import store_key
from meshchat.store.mailbox import MailboxStatistics, owned_tags
from meshchat.store.messenger import Messenger, MessengerStatistics, StoreConfig
from meshchat.store.payload import Chat, Receipt, decode_payload, encode_payload
from meshchat.store.sqlite import SqliteStorage
from meshchat.store.storage import InboxRecord, MailboxItem, OutboxRecord, OutboxStatus, SeenEntry
from meshchat.wire import EnvelopeKind

LOCAL = "/ip4/127.0.0.1/tcp/0"
#: Message body, bytes: a chat line (its envelope is 367 bytes, the smallest padding bucket).
BODY = 100
#: Seconds each stage may take before what is missing counts as lost.
LIMIT = 300.0
#: Rounds the outbox and sqlite measurements alternate in.
ROUNDS = 4
TARGET = 2000.0


# --- storage hooks ------------------------------------------------------------------------------------


@dataclass
class MailboxLog:
    """What the mailbox's storage saw, with times (perf_counter)."""

    sender: Identity
    sender_tags: frozenset[bytes]
    expected: set[bytes] = field(default_factory=set)
    receipted: set[bytes] = field(default_factory=set)
    receipt_envelopes: int = 0
    syncs: list[float] = field(default_factory=list)
    fetches: list[float] = field(default_factory=list)
    deletes: list[float] = field(default_factory=list)
    receipts_done: float | None = None
    done: trio.Event = field(default_factory=trio.Event)


class MailboxStorage(SqliteStorage):
    """M's store: a ``SqliteStorage`` that notes when sync steps arrive and which receipts it holds."""

    log: MailboxLog | None = None

    def mailbox_items(
        self, tags: Iterable[bytes], *, kind: EnvelopeKind | None = None
    ) -> list[tuple[int, bytes]]:
        if self.log is not None:
            self.log.syncs.append(time.perf_counter())  # one per SyncRequest (reconcile round)
        return super().mailbox_items(tags, kind=kind)

    def mailbox_get(self, message_ids: Iterable[bytes]) -> list[MailboxItem]:
        asked = list(message_ids)
        if self.log is not None and len(asked) > 1:  # store requests check one id at a time
            self.log.fetches.append(time.perf_counter())
        return super().mailbox_get(asked)

    def mailbox_delete(self, tags: Iterable[bytes], up_to: int) -> list[MailboxItem]:
        if self.log is not None:
            self.log.deletes.append(time.perf_counter())
        return super().mailbox_delete(tags, up_to)

    def mailbox_put(self, items: Sequence[MailboxItem]) -> list[MailboxItem]:
        stored = super().mailbox_put(items)
        log = self.log
        if log is None:
            return stored
        for item in stored:
            if item.inbox_tag not in log.sender_tags:
                continue
            try:
                payload = decode_payload(open_envelope(log.sender, item.envelope, wall_now=time.time()).body)
            except MeshchatError:
                continue
            if isinstance(payload, Receipt):
                log.receipt_envelopes += 1
                log.receipted.update(payload.message_ids)
        if log.receipts_done is None and log.expected and log.expected <= log.receipted:
            log.receipts_done = time.perf_counter()
            log.done.set()
        return stored


class RecipientStorage(SqliteStorage):
    """B's store: a ``SqliteStorage`` that times ``accept`` (the fsync'd seen window + inbox write)."""

    accept_seconds = 0.0
    accept_calls = 0

    def accept(
        self,
        entries: Sequence[SeenEntry],
        messages: Sequence[InboxRecord],
        outbox: Sequence[OutboxRecord] = (),
    ) -> list[InboxRecord]:
        started = time.perf_counter()
        try:
            return super().accept(entries, messages, outbox)
        finally:
            self.accept_seconds += time.perf_counter() - started
            self.accept_calls += 1


# --- resync -------------------------------------------------------------------------------------------


@dataclass
class Resync:
    messages: int
    b_started: float
    sent_seconds: float
    stored_seconds: float
    open_seconds: float
    first_message: float | None
    all_messages: float | None
    total_seconds: float
    events: int
    received_ids: set[bytes]
    distinct: int
    log: MailboxLog
    recipient: RecipientStorage
    recipient_stats: MessengerStatistics
    mailbox_stats: MailboxStatistics | None
    events_dropped: int
    decrypt_rate: float
    profile: str

    @property
    def rate(self) -> float:
        return self.distinct / self.total_seconds if self.total_seconds else 0.0


async def resync(folder: Path, count: int, *, profile: bool, encrypted: bool = False) -> Resync:
    mailbox_id, sender_id, recipient_id = (Identity(bytes([i]) * 32) for i in (0x4D, 0x41, 0x42))

    def key(identity: Identity) -> bytes | None:
        return store_key(identity) if encrypted else None

    body = bytes(BODY)
    config = StoreConfig(mailbox_copies=1)
    m_storage = MailboxStorage(folder / "mailbox.db", key=key(mailbox_id))
    async with Node.open(identity=mailbox_id, listen=[LOCAL], mailbox=True, storage=m_storage) as mailbox:
        m_addr = mailbox.listen_addrs[0]

        # A fills the mailbox, then goes offline.
        started = time.perf_counter()
        async with (
            Node.open(
                identity=sender_id,
                listen=[LOCAL],
                mailboxes=[m_addr],
                store_config=config,
                storage=SqliteStorage(folder / "sender.db", key=key(sender_id)),
            ) as sender,
            trio.open_nursery() as nursery,
        ):

            async def drain() -> None:  # nobody else reads A's 10,000 StatusChanged events
                async for _ in sender.events():
                    pass

            nursery.start_soon(drain)
            with trio.fail_after(LIMIT):
                await sender.wait_for(lambda: mailbox.peer_id in sender.mailboxes)
            handles = []
            for index in range(count):
                handles.append(await sender.send(recipient_id.public, body))
                if index % 64 == 63:
                    await trio.lowlevel.checkpoint()  # let the publish and store tasks run
            sent_seconds = time.perf_counter() - started
            with trio.fail_after(LIMIT):
                await sender.wait_for(lambda: _held(mailbox) >= count)
                for handle in handles:
                    await handle.wait_until(OutboxStatus.STORED)
            stored_seconds = time.perf_counter() - started
            not_stored = sum(h.status is not OutboxStatus.STORED for h in handles)
            if not_stored:
                print(f"warning: {not_stored} messages are not STORED on the mailbox", flush=True)
            nursery.cancel_scope.cancel()
        print(
            f"setup: A queued {count:,} messages in {sent_seconds:.2f} s, all STORED on M after "
            f"{stored_seconds:.2f} s; A is offline",
            flush=True,
        )

        # For scale, later: the envelopes B will fetch, opened without network or storage.
        b_tags = owned_tags(recipient_id.public, time.time())
        held = m_storage.mailbox_get([mid for _, mid in m_storage.mailbox_items(b_tags)])
        envelopes = [item.envelope for item in held]

        log = MailboxLog(
            sender=sender_id,
            sender_tags=frozenset(owned_tags(sender_id.public, time.time())),
            expected={h.message_id for h in handles},
        )
        m_storage.log = log
        r_storage = RecipientStorage(folder / "recipient.db", key=key(recipient_id))
        seen: set[bytes] = set()
        events = 0
        first_message = all_messages = None
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        started = b_started = time.perf_counter()
        async with Node.open(
            identity=recipient_id,
            listen=[LOCAL],
            mailboxes=[m_addr],
            store_config=config,
            storage=r_storage,
        ) as recipient:
            open_seconds = time.perf_counter() - started
            with trio.move_on_after(LIMIT):
                async for event in recipient.events():
                    if isinstance(event, DirectMessage):
                        events += 1
                        seen.add(event.message_id)
                        if first_message is None:
                            first_message = time.perf_counter() - started
                        if len(seen) == count:
                            all_messages = time.perf_counter() - started
                            break
                await log.done.wait()
            total_seconds = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
            await trio.sleep(0.2)  # anything delivered twice arrives now, outside the clock
            while True:
                try:
                    event = recipient.events().receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(event, DirectMessage):
                    events += 1
                    seen.add(event.message_id)
            recipient_stats = recipient.store_statistics()
            events_dropped = recipient.events_dropped
        mailbox_stats = mailbox.mailbox_statistics()

    keys = KeyCache()
    decrypt_started = time.perf_counter()
    for envelope in envelopes:
        decode_payload(open_envelope(recipient_id, envelope, wall_now=time.time(), key_cache=keys).body)
    decrypt_seconds = time.perf_counter() - decrypt_started

    text = ""
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(25)
        text = out.getvalue()
    return Resync(
        messages=count,
        b_started=b_started,
        sent_seconds=sent_seconds,
        stored_seconds=stored_seconds,
        open_seconds=open_seconds,
        first_message=first_message,
        all_messages=all_messages,
        total_seconds=total_seconds,
        events=events,
        received_ids=seen,
        distinct=len(seen & log.expected),
        log=log,
        recipient=r_storage,
        recipient_stats=recipient_stats,
        mailbox_stats=mailbox_stats,
        events_dropped=events_dropped,
        decrypt_rate=len(envelopes) / decrypt_seconds if decrypt_seconds else 0.0,
        profile=text,
    )


def _held(mailbox: Node) -> int:
    """Envelopes ``mailbox`` holds (checked on A's state changes: each store reply wakes A)."""
    stats = mailbox.mailbox_statistics()
    assert stats is not None, "opened with mailbox=True"
    return stats.items


def print_resync(r: Resync) -> None:
    log, started = r.log, r.b_started  # M's timestamps are shown on B's clock

    def at(t: float | None) -> str:
        return "     -" if t is None else f"{t - started:6.2f}"

    def rel(t: float | None) -> str:
        return "     -" if t is None else f"{t:6.2f}"

    print(f"resync of {r.messages:,} messages, B's clock (s from Node.open):")
    print(f"  B's Node.open returned          {rel(r.open_seconds)}")
    print(
        f"  first sync request at M         {at(log.syncs[0] if log.syncs else None)}"
        f"   ({len(log.syncs)} reconcile rounds)"
    )
    print(
        f"  first fetch at M                {at(log.fetches[0] if log.fetches else None)}"
        f"   ({len(log.fetches)} fetches)"
    )
    print(f"  first message to B's app        {rel(r.first_message)}")
    print(f"  last fetch at M                 {at(log.fetches[-1] if log.fetches else None)}")
    print(f"  all messages to B's app         {rel(r.all_messages)}")
    print(f"  delete at M                     {at(log.deletes[0] if log.deletes else None)}")
    print(
        f"  all receipts stored on M        {at(log.receipts_done)}"
        f"   ({log.receipt_envelopes} receipt envelopes, {len(log.receipted & log.expected):,} ids)"
    )
    print(
        f"  B in accept (fsync'd writes)    {r.recipient.accept_seconds:6.2f}   "
        f"({r.recipient.accept_calls} calls)"
    )
    print(
        f"  open_envelope alone, same msgs  {r.messages / r.decrypt_rate if r.decrypt_rate else 0:6.2f}"
        f"   ({r.decrypt_rate:,.0f} msgs/s, no network or storage)"
    )
    print(f"  B store_statistics: {r.recipient_stats}")
    print(f"  M mailbox_statistics: {r.mailbox_stats}")
    print(f"  B events dropped (queue full): {r.events_dropped}")
    print(
        f"resync: {r.rate:,.0f} msgs/s end to end ({r.distinct:,} of {r.messages:,} in "
        f"{r.total_seconds:.2f} s; target >= {TARGET:,.0f}) "
        f"received events {r.events:,}, distinct {r.distinct:,}",
        flush=True,
    )


# --- outbox writes ------------------------------------------------------------------------------------


class TimedOutbox(SqliteStorage):
    """The sender's store: a ``SqliteStorage`` that times ``outbox_add`` (the fsync'd write)."""

    add_seconds = 0.0

    def outbox_add(self, records: Sequence[OutboxRecord]) -> None:
        started = time.perf_counter()
        try:
            super().outbox_add(records)
        finally:
            self.add_seconds += time.perf_counter() - started


@dataclass
class Outbox:
    count: int
    outbox_seconds: float
    add_seconds: float
    encrypted_seconds: float
    encrypted_add_seconds: float
    sqlite_seconds: float
    seal_seconds: float
    size: int

    @property
    def rate(self) -> float:
        return self.count / self.outbox_seconds

    @property
    def encrypted_rate(self) -> float:
        return self.count / self.encrypted_seconds

    @property
    def sqlite_rate(self) -> float:
        return self.count / self.sqlite_seconds

    @property
    def ratio(self) -> float:
        return self.rate / self.sqlite_rate

    @property
    def encrypted_ratio(self) -> float:
        """Encrypted outbox msgs/s over plain outbox msgs/s."""
        return self.encrypted_rate / self.rate


def outbox_vs_sqlite(folder: Path, count: int) -> Outbox:
    """Outbox writes, plain and encrypted, against bare sqlite inserts (and sealing alone).

    The four alternate in ``ROUNDS`` rounds, so disk weather hits all alike.
    """
    sender, recipient = Identity(bytes([0x53]) * 32), Identity(bytes([0x52]) * 32).public
    body = bytes(BODY)
    storage = TimedOutbox(folder / "outbox.db")
    messenger = Messenger(sender, storage, rng=random.Random(1), wall_now=time.time())
    record, _ = messenger.send(recipient, body, wall_now=time.time())  # warm up; gives the size
    storage.add_seconds = 0.0
    size = len(record.envelope)
    encrypted = TimedOutbox(folder / "outbox-encrypted.db", key=store_key(sender))
    encrypted_messenger = Messenger(sender, encrypted, rng=random.Random(1), wall_now=time.time())
    encrypted_messenger.send(recipient, body, wall_now=time.time())
    encrypted.add_seconds = 0.0

    db = sqlite3.connect(folder / "plain.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, message_id BLOB NOT NULL UNIQUE, "
        "recipient BLOB NOT NULL, envelope BLOB NOT NULL)"
    )
    blob = os.urandom(size)
    payload = encode_payload(Chat(seq=1, body=body))
    per_round = max(1, count // ROUNDS)
    outbox_seconds = encrypted_seconds = sqlite_seconds = seal_seconds = 0.0
    done = 0
    try:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(per_round):
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT INTO t (message_id, recipient, envelope) VALUES (?, ?, ?)",
                    (os.urandom(32), recipient.ed25519, blob),
                )
                db.execute("COMMIT")
            sqlite_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(per_round):
                messenger.send(recipient, body, wall_now=time.time())
            outbox_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(per_round):
                encrypted_messenger.send(recipient, body, wall_now=time.time())
            encrypted_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(per_round):
                seal(sender, recipient, payload, wall_now=time.time())
            seal_seconds += time.perf_counter() - started
            done += per_round
    finally:
        db.close()
        storage.close()
        encrypted.close()
    return Outbox(
        count=done,
        outbox_seconds=outbox_seconds,
        add_seconds=storage.add_seconds,
        encrypted_seconds=encrypted_seconds,
        encrypted_add_seconds=encrypted.add_seconds,
        sqlite_seconds=sqlite_seconds,
        seal_seconds=seal_seconds,
        size=size,
    )


# --- opening ------------------------------------------------------------------------------------------

#: Opens timed per file (the median is reported).
OPENS = 9


@dataclass
class Opening:
    plain_ms: float
    encrypted_ms: float
    size_bytes: int
    passphrase_ms: float

    @property
    def ratio(self) -> float:
        """Encrypted opens/s over plain opens/s."""
        return self.plain_ms / self.encrypted_ms


def opening(folder: Path) -> Opening:
    """Median ``SqliteStorage`` open + close of the outbox files ``outbox_vs_sqlite`` filled."""
    key = store_key(Identity(bytes([0x53]) * 32))

    def median_ms(path: Path, key: bytes | None) -> float:
        times = []
        for _ in range(OPENS):
            started = time.perf_counter()
            SqliteStorage(path, key=key).close()
            times.append((time.perf_counter() - started) * 1000)
        return sorted(times)[OPENS // 2]

    import sqlcipher3.dbapi2 as sqlcipher  # noqa: PLC0415  # for scale only: a passphrase key

    tiny = folder / "passphrase.db"
    started = time.perf_counter()
    db = sqlcipher.connect(str(tiny))
    db.execute("PRAGMA key = 'a passphrase'")  # PBKDF2-HMAC-SHA512, SQLCipher 4's default iterations
    db.execute("CREATE TABLE t (x)")
    db.close()
    passphrase_ms = (time.perf_counter() - started) * 1000
    return Opening(
        plain_ms=median_ms(folder / "outbox.db", None),
        encrypted_ms=median_ms(folder / "outbox-encrypted.db", key),
        size_bytes=(folder / "outbox-encrypted.db").stat().st_size,
        passphrase_ms=passphrase_ms,
    )


# --- main ---------------------------------------------------------------------------------------------


def side_by_side(name: str, plain: float, encrypted: float, unit: str) -> str:
    ratio = encrypted / plain if plain else 0.0
    return f"  {name:<34} {plain:9,.0f} {unit}  encrypted {encrypted:9,.0f} {unit}  ratio {ratio:.2f}"


async def main(messages: int, outbox_messages: int, profile: bool) -> None:
    # Every node asks each peer that joins whether it is a mailbox; py-libp2p logs each "no" (A and B
    # are not mailboxes) at ERROR level on stderr. As the CLI does, keep its log quiet.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench_store-") as tmp:
        folder = Path(tmp)
        o = outbox_vs_sqlite(folder, outbox_messages)
        per_msg = 1e6 / o.count
        print(
            f"outbox writes, {o.count:,} x Messenger.send (seal + one fsync'd commit each):\n"
            f"  outbox                                  {o.rate:8,.0f} msgs/s  "
            f"{o.outbox_seconds * per_msg:6.0f} us/msg\n"
            f"    of which outbox_add (sqlite, fsync)            "
            f"{o.add_seconds * per_msg:6.0f} us/msg\n"
            f"  outbox, store encrypted (SQLCipher)     {o.encrypted_rate:8,.0f} msgs/s  "
            f"{o.encrypted_seconds * per_msg:6.0f} us/msg\n"
            f"    of which outbox_add (SQLCipher, fsync)         "
            f"{o.encrypted_add_seconds * per_msg:6.0f} us/msg\n"
            f"    seal alone (same body, no storage)             "
            f"{o.seal_seconds * per_msg:6.0f} us/msg\n"
            f"  sqlite INSERT + COMMIT, {o.size}-byte rows {o.sqlite_rate:8,.0f} rows/s  "
            f"{o.sqlite_seconds * per_msg:6.0f} us/row   (WAL, synchronous=FULL)\n"
            f"  outbox / sqlite: {o.ratio:.2f}   encrypted outbox / outbox: {o.encrypted_ratio:.2f}",
            flush=True,
        )
        opened = opening(folder)
        print(
            f"opening SqliteStorage with {o.count + 1:,} outbox records "
            f"({opened.size_bytes / 1e6:.1f} MB, quick_check reads every page), median of {OPENS}:\n"
            f"  plain {opened.plain_ms:6.2f} ms   encrypted (raw key, no KDF) {opened.encrypted_ms:6.2f} ms"
            f"   ratio (opens/s) {opened.ratio:.2f}\n"
            f"  for scale: a SQLCipher passphrase key (PBKDF2, 256,000 iterations) "
            f"{opened.passphrase_ms:6.1f} ms",
            flush=True,
        )
        (folder / "plain").mkdir()
        r = await resync(folder / "plain", messages, profile=profile)
        print_resync(r)
        if r.profile:
            print(r.profile)
        (folder / "encrypted").mkdir()
        print("\nthe same resync, all three stores encrypted at rest:", flush=True)
        e = await resync(folder / "encrypted", messages, profile=False, encrypted=True)
        print_resync(e)
    print("\nplain vs encrypted stores, same run:")
    print(side_by_side("outbox writes", o.rate, o.encrypted_rate, "msgs/s"))
    print(side_by_side("resync end to end", r.rate, e.rate, "msgs/s"))
    print(
        side_by_side("opens of the outbox store", 1000 / opened.plain_ms, 1000 / opened.encrypted_ms, "/s   ")
    )
    lost = r.messages - r.distinct + e.messages - e.distinct
    duplicated = r.events - len(r.received_ids) + e.events - len(e.received_ids)
    print(
        f"resync_msgs_per_s={r.rate:.0f} outbox_ratio_vs_sqlite={o.ratio:.2f} "
        f"lost={lost} duplicated={duplicated} "
        f"outbox_encrypted_msgs_per_s={o.encrypted_rate:.0f} outbox_encrypted_ratio={o.encrypted_ratio:.2f} "
        f"resync_encrypted_msgs_per_s={e.rate:.0f} "
        f"resync_encrypted_ratio={e.rate / r.rate if r.rate else 0:.2f} "
        f"open_ms={opened.plain_ms:.2f} open_encrypted_ms={opened.encrypted_ms:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages queued on the mailbox")
    parser.add_argument("--outbox-messages", type=int, default=2_000, help="outbox writes timed")
    parser.add_argument("--profile", action="store_true", help="run the resync under cProfile")
    args = parser.parse_args()
    trio.run(main, args.messages, args.outbox_messages, args.profile)
