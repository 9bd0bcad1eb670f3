"""The sync session's state table, driven against a real mailbox core (in memory)."""

from __future__ import annotations

from meshchat.crypto import seal
from meshchat.identity import Identity
from meshchat.store.mailbox import MailboxCore, owned_tags
from meshchat.store.payload import Chat, encode_payload
from meshchat.store.protocol import Deleted, Fetched, FetchRequest, StoreRequest, Synced
from meshchat.store.storage import MemoryStorage
from meshchat.store.sync import SyncSession, SyncState
from meshchat.wire import decode_envelope, message_id

NOW = 1_800_000_000.0
ALICE, BOB = Identity(b"\x01" * 32), Identity(b"\x02" * 32)


def mailbox_with(count: int) -> tuple[MailboxCore, list[bytes]]:
    core = MailboxCore(MemoryStorage())
    envelopes = [
        seal(ALICE, BOB.public, encode_payload(Chat(seq=i + 1, body=b"x")), wall_now=NOW + i // 3)
        for i in range(count)
    ]
    if envelopes:
        core.handle(ALICE.public.peer_id, StoreRequest(envelopes=tuple(envelopes)), wall_now=NOW)
    return core, envelopes


def run(session: SyncSession, core: MailboxCore, accepted: list[bytes]) -> list[SyncState]:
    """Drive ``session`` to its end; return the states it went through."""
    states = [session.state]
    for _ in range(100):
        request = session.take_request()
        if request is None:
            break
        answer = core.handle(BOB.public.peer_id, request, wall_now=NOW)
        if isinstance(answer, Synced):
            session.synced(answer)
        elif isinstance(answer, Fetched):
            assert isinstance(request, FetchRequest)
            got, problems = session.fetched(request, answer)
            assert not problems
            accepted += got
            session.accepted()
        elif isinstance(answer, Deleted):
            session.deleted()
        if states[-1] is not session.state:
            states.append(session.state)
    return states


def test_a_mailbox_holding_nothing_ends_without_a_delete() -> None:
    core, _ = mailbox_with(0)
    session = SyncSession(owned_tags(BOB.public, NOW), (), fetch_batch=4)
    assert run(session, core, []) == [SyncState.RECONCILING, SyncState.DONE]


def test_fetch_in_batches_keeps_the_senders_order_then_deletes() -> None:
    core, envelopes = mailbox_with(10)
    accepted: list[bytes] = []
    session = SyncSession(owned_tags(BOB.public, NOW), (), fetch_batch=4)
    states = run(session, core, accepted)
    assert states == [SyncState.RECONCILING, SyncState.FETCHING, SyncState.DELETING, SyncState.DONE]
    assert [decode_envelope(e).expiry for e in accepted] == sorted(
        decode_envelope(e).expiry for e in envelopes
    )
    assert sorted(accepted) == sorted(envelopes)
    assert core.statistics().items == 0


def test_what_we_already_have_is_not_fetched_but_is_deleted() -> None:
    core, envelopes = mailbox_with(6)
    seen = [(decode_envelope(e).expiry, message_id(e)) for e in envelopes]
    accepted: list[bytes] = []
    session = SyncSession(owned_tags(BOB.public, NOW), seen, fetch_batch=4)
    assert run(session, core, accepted) == [SyncState.RECONCILING, SyncState.DELETING, SyncState.DONE]
    assert accepted == []
    assert core.statistics().items == 0
