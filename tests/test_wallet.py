"""The credentials wallet (credentials.db): persistence across reopen, bounds, idempotence."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshchat.credentials import wallet as wallet_module
from meshchat.credentials.wallet import (
    MAX_PENDING,
    MAX_PENDING_STRANGERS,
    WALLET_FILE,
    HeldRecord,
    IssuedRecord,
    OwnRequest,
    PendingRequest,
    Wallet,
)
from meshchat.errors import StorageError


def pending(n: int, *, stranger: bool = False, vct: str = "diploma") -> PendingRequest:
    return PendingRequest(
        nonce=f"n{n:021d}",
        requester=n.to_bytes(32, "big"),
        holder=b"h" * 32,
        vct=vct,
        note="",
        stranger=stranger,
        received_at=float(n),
    )


def issued(n: int, request: str) -> IssuedRecord:
    return IssuedRecord(
        credential_id=f"c{n}",
        request=request,
        requester=b"r" * 32,
        holder=b"h" * 32,
        vct="diploma",
        list_uri="meshchat:status:did:key:z:1",
        status_index=n,
        revoked=False,
        issued_at=float(n),
        expires=None,
        compact="jwt~",
    )


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / WALLET_FILE
    with Wallet(path) as wallet:
        wallet.add_own_request(
            OwnRequest(nonce="a" * 22, issuer_did="did:key:zI", vct="d", key_id=b"k" * 16, requested_at=1)
        )
        held = HeldRecord(
            credential_id="c1",
            compact="x~",
            key_id=b"k" * 16,
            issuer_did="did:key:zI",
            vct="d",
            received_at=2,
        )
        assert wallet.add_held(held)
        assert wallet.add_pending(pending(1))
        wallet.add_issued(issued(7, "b" * 22), bits=("uri:1", b"\x00\x01", 3.0))
        wallet.set_revoked("c7", bits=("uri:1", b"\x80\x01", 4.0))
        wallet.trust("did:key:zI", "School", now=5)
        wallet.cache_token("uri:1", "did:key:zI", "token", now=6)
    assert (path.stat().st_mode & 0o777) == 0o600
    with Wallet(path) as wallet:
        assert wallet.own_request("a" * 22) is not None
        assert [h.credential_id for h in wallet.held()] == ["c1"]
        assert wallet.held_one("c1") == held
        assert wallet.pending() == [pending(1)]
        record = wallet.issued_one("c7")
        assert record is not None and record.revoked
        assert wallet.status_lists() == [("uri:1", b"\x80\x01", 2)]
        assert wallet.trusted() == {"did:key:zI": "School"}
        assert wallet.cached_tokens() == [("did:key:zI", "token", 6)]


def test_redelivered_controls_change_nothing() -> None:
    with Wallet(":memory:") as wallet:
        nonce = "a" * 22
        wallet.add_own_request(
            OwnRequest(nonce=nonce, issuer_did="did:key:zI", vct="d", key_id=b"k" * 16, requested_at=1)
        )
        held = HeldRecord(
            credential_id="c1", compact="x~", key_id=b"k" * 16, issuer_did="i", vct="d", received_at=2
        )
        assert wallet.add_held(held, answered=nonce)
        assert wallet.own_request(nonce) is None  # answered: a second ISSUED for it finds no request
        assert not wallet.add_held(held, answered=nonce)
        # an answered request sent again is not pending again
        request = pending(3)
        assert wallet.add_pending(request)
        wallet.add_issued(issued(1, request.nonce))
        assert wallet.pending() == []
        assert not wallet.add_pending(request)
        assert wallet.pending() == []


def test_asking_again_replaces_the_earlier_request() -> None:
    with Wallet(":memory:") as wallet:
        first = pending(1)
        again = PendingRequest(**{**_fields(first), "nonce": "z" * 22, "received_at": 9.0})
        wallet.add_pending(first)
        wallet.add_pending(again)
        assert wallet.pending() == [again]
        assert wallet.pending_from(first.requester, "diploma") == again
        assert wallet.pending_from(first.requester, "passport") is None


def _fields(record: PendingRequest) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]


def test_strangers_fill_only_their_share_and_the_whole_is_bounded() -> None:
    with Wallet(":memory:") as wallet:
        for n in range(10):
            wallet.add_pending(pending(n))  # contacts' requests
        for n in range(100, 100 + 3 * MAX_PENDING_STRANGERS):
            wallet.add_pending(pending(n, stranger=True))
        kept = wallet.pending()
        strangers = [p for p in kept if p.stranger]
        assert len(strangers) == MAX_PENDING_STRANGERS
        assert min(p.received_at for p in strangers) == 100 + 2 * MAX_PENDING_STRANGERS  # newest kept
        assert len([p for p in kept if not p.stranger]) == 10  # the flood took no contact's slot


def test_pending_total_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wallet_module, "MAX_PENDING", 20)
    with Wallet(":memory:") as wallet:
        for n in range(50):
            wallet.add_pending(pending(n))
        kept = wallet.pending()
        assert len(kept) == 20 and kept[0].received_at == 30
    assert MAX_PENDING == 1000


def test_held_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wallet_module, "MAX_HELD", 3)
    with Wallet(":memory:") as wallet:
        results = [
            wallet.add_held(
                HeldRecord(
                    credential_id=f"c{n}", compact="x", key_id=b"k", issuer_did="i", vct="d", received_at=n
                )
            )
            for n in range(5)
        ]
        assert results == [True, True, True, False, False]
        assert len(wallet.held()) == 3
        # a full wallet keeps the request the refused credential answered (it can come again)
        wallet.add_own_request(
            OwnRequest(nonce="r" * 22, issuer_did="i", vct="d", key_id=b"k", requested_at=1)
        )
        extra = HeldRecord(
            credential_id="c9", compact="x", key_id=b"k", issuer_did="i", vct="d", received_at=9
        )
        assert not wallet.add_held(extra, answered="r" * 22)
        assert wallet.own_request("r" * 22) is not None


def test_trusted_and_cache_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wallet_module, "MAX_TRUSTED", 2)
    monkeypatch.setattr(wallet_module, "MAX_CACHED_TOKENS", 3)
    with Wallet(":memory:") as wallet:
        wallet.trust("a", "A", now=1)
        wallet.trust("b", "B", now=2)
        wallet.trust("a", "Renamed", now=3)  # renaming is not adding
        with pytest.raises(ValueError, match="at most 2"):
            wallet.trust("c", "C", now=4)
        for n in range(5):
            wallet.cache_token(f"uri:{n}", "a", f"t{n}", now=n)
        assert [t for _, t, _ in wallet.cached_tokens()] == ["t2", "t3", "t4"]
        assert wallet.distrust("a")
        assert wallet.cached_tokens() == [] and wallet.trusted() == {"b": "B"}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / WALLET_FILE
    Wallet(path).close()
    import sqlite3  # noqa: PLC0415

    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StorageError, match="newer meshchat"):
        Wallet(path)


def test_a_closed_wallet_raises_storage_error() -> None:
    wallet = Wallet(":memory:")
    wallet.close()
    with pytest.raises(StorageError, match="closed"):
        wallet.held()
