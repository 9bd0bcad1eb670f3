"""Quotas hold against many identities (issue 12, item 5): PeerIds cost nothing, so strangers together
fill at most ``STRANGER_SHARE`` of a mailbox that has an owner; the owner's and its contacts'
envelopes still find room."""

from __future__ import annotations

import random

import pytest

from meshchat.crypto import epoch_of, inbox_tag
from meshchat.identity import Identity, PublicIdentity
from meshchat.store.mailbox import STRANGER_SHARE, MailboxCore, MailboxLimits, MailboxRefusal
from meshchat.store.protocol import StoreCode, Stored, StoreRequest
from meshchat.store.storage import MemoryStorage
from meshchat.wire import EnvelopeKind
from meshchat.wire.envelope import encode_fields

NOW = 1_800_000_000.0
LIMITS = MailboxLimits(per_tag_bytes=16 * 1024, per_peer_bytes=8 * 1024, total_bytes=64 * 1024)
OWNER = Identity(b"\x01" * 32).public
FRIEND = Identity(b"\x02" * 32).public


def envelope(to: bytes, rng: random.Random) -> bytes:
    return encode_fields(
        kind=EnvelopeKind.SEALED,
        inbox_tag=to,
        expiry=int(NOW) + 3600,
        ephemeral_key=rng.randbytes(32),
        nonce=rng.randbytes(24),
        ciphertext=rng.randbytes(900),
    )


def tag_of(who: PublicIdentity) -> bytes:
    return inbox_tag(who, epoch_of(NOW))


def store(core: MailboxCore, peer: str, data: bytes) -> StoreCode:
    answer = core.handle(peer, StoreRequest(envelopes=(data,)), wall_now=NOW)
    assert isinstance(answer, Stored)
    return answer.results[0].code


def flood(core: MailboxCore, identities: int, rng: random.Random) -> dict[str, int]:
    """Each fresh identity stores for a stranger's tag until refused; bytes stored per identity."""
    held: dict[str, int] = {}
    for _ in range(identities):
        peer = Identity(rng.randbytes(32)).public.peer_id
        victim = tag_of(Identity(rng.randbytes(32)).public)
        held[peer] = 0
        for _ in range(100):
            data = envelope(victim, rng)
            if store(core, peer, data) is not StoreCode.STORED:
                break
            held[peer] += len(data)
    return held


@pytest.mark.parametrize("identities", [8, 100])
def test_many_stranger_identities_cannot_crowd_out_the_owner_and_its_contacts(identities: int) -> None:
    rng = random.Random(identities)
    core = MailboxCore(MemoryStorage(), LIMITS, owner=OWNER)
    core.set_friends([FRIEND])
    held = flood(core, identities, rng)
    share = int(LIMITS.total_bytes * STRANGER_SHARE)
    stats = core.statistics()
    assert stats.stranger_bytes == sum(held.values()) <= share
    assert all(b <= LIMITS.per_peer_bytes for b in held.values())
    assert stats.stranger_bytes > share - 2 * 1024  # they filled what they could
    assert stats.refused[MailboxRefusal.STRANGERS_FULL] >= 1
    stranger = Identity(rng.randbytes(32)).public.peer_id
    # For the owner (from anyone), from a contact (to anyone), for a contact (from anyone): stored.
    assert store(core, stranger, envelope(tag_of(OWNER), rng)) is StoreCode.STORED
    assert (
        store(core, FRIEND.peer_id, envelope(tag_of(Identity(b"\x09" * 32).public), rng)) is StoreCode.STORED
    )
    assert store(core, stranger, envelope(tag_of(FRIEND), rng)) is StoreCode.STORED
    assert (
        store(core, OWNER.peer_id, envelope(tag_of(Identity(b"\x0a" * 32).public), rng)) is StoreCode.STORED
    )
    # Another stranger for a stranger: the strangers' share is full.
    assert (
        store(core, stranger, envelope(tag_of(Identity(b"\x0b" * 32).public), rng)) is StoreCode.MAILBOX_FULL
    )
    assert core.statistics().stranger_bytes == stats.stranger_bytes


def test_without_an_owner_a_few_identities_fill_the_whole_budget_as_before() -> None:
    """The old behaviour, kept for a public mailbox: nobody is a stranger, so nothing is reserved."""
    rng = random.Random(8)
    core = MailboxCore(MemoryStorage(), LIMITS)
    held = flood(core, 9, rng)  # 8 KiB each, in ~1 KB envelopes: nine fill 64 KiB
    assert sum(held.values()) > LIMITS.total_bytes - 2 * 1024
    assert core.statistics().stranger_bytes == 0
    assert store(core, FRIEND.peer_id, envelope(tag_of(OWNER), rng)) is StoreCode.MAILBOX_FULL


def test_the_strangers_count_survives_a_restart_and_follows_set_friends() -> None:
    rng = random.Random(3)
    storage = MemoryStorage()
    core = MailboxCore(storage, LIMITS, owner=OWNER)
    flood(core, 3, rng)
    assert store(core, FRIEND.peer_id, envelope(tag_of(FRIEND), rng)) is StoreCode.STORED
    before = core.statistics().stranger_bytes
    assert before > 0
    again = MailboxCore(storage, LIMITS, owner=OWNER)
    again.handle(OWNER.peer_id, StoreRequest(envelopes=()), wall_now=NOW)  # counts under the day's set
    assert again.statistics().stranger_bytes == before  # FRIEND is no contact yet: a stranger too
    again.set_friends([FRIEND])
    again.handle(OWNER.peer_id, StoreRequest(envelopes=()), wall_now=NOW)
    assert again.statistics().stranger_bytes == before - len(envelope(tag_of(FRIEND), rng))


def test_strangers_flooding_the_owners_inbox_leave_room_for_its_contacts() -> None:
    rng = random.Random(5)
    core = MailboxCore(MemoryStorage(), LIMITS, owner=OWNER)
    core.set_friends([FRIEND])
    stored = 0
    for _ in range(40):  # fresh identities, each well within its per-peer quota
        peer = Identity(rng.randbytes(32)).public.peer_id
        data = envelope(tag_of(OWNER), rng)
        if store(core, peer, data) is StoreCode.STORED:
            stored += len(data)
        else:
            break
    assert LIMITS.per_tag_bytes * STRANGER_SHARE - 1024 < stored <= LIMITS.per_tag_bytes * STRANGER_SHARE
    assert core.statistics().refused[MailboxRefusal.STRANGERS_TAG_FULL] == 1
    assert store(core, FRIEND.peer_id, envelope(tag_of(OWNER), rng)) is StoreCode.STORED
