"""``Wallet``: what a profile keeps about credentials, in ``credentials.db`` beside ``store.db``.

One file for the three roles a person can play:

- **holder**: the requests this profile sent (``own_requests``: the request nonce, the issuer, the type
  and the ``key_id`` its holder key is derived from) and the credentials it holds (``held``: the SD-JWT,
  its ``key_id``, when it arrived). The ``key_id`` never leaves the profile: with the identity's seed it
  gives the holder key (``holder_key(seed, key_id)``), so the wallet alone presents nothing.
- **issuer**: holders' requests waiting for an answer (``pending``), the credentials issued
  (``issued``: holder key, type, status list entry, revoked or not) and the issuer's own status lists
  (``status_lists``: the bits and a version that goes up with each change).
- **verifier**: the issuers it trusts (``trusted``: did -> name) and the newest status token of each of
  their lists (``status_cache``), so a verification works offline after a restart.

What it is not: a parser or a verifier. It stores text and numbers its caller checked
(``meshchat.credential_api``). It is a low layer (``meshchat.credentials`` may not import the store),
so it takes the connection from its caller: ``Wallet(path, connect=...)``; the node passes a SQLCipher
connection under the identity's store key (``meshchat.store.encrypted``), so credentials and claims
are encrypted at rest like the rest of the profile; without ``connect`` it opens plain sqlite (tests,
``:memory:``).

Conventions of ``meshchat.files.sqlite``: one transaction per call under a lock, WAL with
``synchronous=FULL``, the schema version in ``user_version`` (a newer one is refused), database errors
raised as ``StorageError``. Every table a peer can grow is bounded by a named constant below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from meshchat.errors import StorageError
from meshchat.localdb import Connect, LocalDb, plain_connect

__all__ = [
    "MAX_CACHED_TOKENS",
    "MAX_HELD",
    "MAX_ISSUED",
    "MAX_OWN_REQUESTS",
    "MAX_PENDING",
    "MAX_PENDING_STRANGERS",
    "MAX_TRUSTED",
    "WALLET_FILE",
    "WALLET_SCHEMA_VERSION",
    "Connect",
    "HeldRecord",
    "IssuedRecord",
    "OwnRequest",
    "PendingRequest",
    "Wallet",
]

#: The wallet's name inside a profile folder.
WALLET_FILE: Final = "credentials.db"
#: ``PRAGMA user_version`` of the schema below.
WALLET_SCHEMA_VERSION: Final = 1
#: Requests from peers waiting for the issuer, at most: an issuer answers them by hand; beyond this the
#: oldest of the same kind (contact or stranger) is dropped. One per (requester, type): asking again
#: replaces the earlier one.
MAX_PENDING: Final = 1000
#: ... of which from people who are not contacts (a stranger's identities are free to make).
MAX_PENDING_STRANGERS: Final = 100
#: Credentials held (they only arrive as answers to our own requests), at most.
MAX_HELD: Final = 10_000
#: Our own requests not answered yet, at most (the oldest is forgotten: its answer is then refused).
MAX_OWN_REQUESTS: Final = 1000
#: Credentials issued and remembered (for revocation), at most: 64 status lists of 16,384 entries.
MAX_ISSUED: Final = 64 * 16_384
#: Issuers trusted, at most (the user adds them one by one).
MAX_TRUSTED: Final = 1000
#: Status tokens cached (newest per list), at most; the least recently received is dropped beyond.
#: ``meshchat.credentials.status.MAX_CACHED_LISTS`` bounds the in-memory cache the same way.
MAX_CACHED_TOKENS: Final = 4096


_SCHEMA: Final = (
    """CREATE TABLE own_requests (
        nonce        TEXT PRIMARY KEY,
        issuer_did   TEXT NOT NULL,
        vct          TEXT NOT NULL,
        key_id       BLOB NOT NULL,
        requested_at REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE held (
        credential_id TEXT PRIMARY KEY,
        compact       TEXT NOT NULL,
        key_id        BLOB NOT NULL,
        issuer_did    TEXT NOT NULL,
        vct           TEXT NOT NULL,
        received_at   REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE pending (
        nonce        TEXT PRIMARY KEY,
        requester    BLOB NOT NULL,
        holder       BLOB NOT NULL,
        vct          TEXT NOT NULL,
        note         TEXT NOT NULL,
        stranger     INTEGER NOT NULL,
        received_at  REAL NOT NULL,
        UNIQUE (requester, vct)) WITHOUT ROWID""",
    """CREATE TABLE issued (
        credential_id TEXT PRIMARY KEY,
        request       TEXT NOT NULL,
        requester     BLOB NOT NULL,
        holder        BLOB NOT NULL,
        vct           TEXT NOT NULL,
        list_uri      TEXT NOT NULL,
        status_index  INTEGER NOT NULL,
        revoked       INTEGER NOT NULL,
        issued_at     REAL NOT NULL,
        expires       REAL,
        compact       TEXT NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX issued_request ON issued (request)",
    """CREATE TABLE status_lists (
        uri        TEXT PRIMARY KEY,
        bits       BLOB NOT NULL,
        version    INTEGER NOT NULL,
        updated_at REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE trusted (
        did      TEXT PRIMARY KEY,
        name     TEXT NOT NULL,
        added_at REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE status_cache (
        uri         TEXT PRIMARY KEY,
        issuer_did  TEXT NOT NULL,
        token       TEXT NOT NULL,
        received_at REAL NOT NULL) WITHOUT ROWID""",
    f"PRAGMA user_version = {WALLET_SCHEMA_VERSION}",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnRequest:
    """A request this profile sent, not answered yet."""

    nonce: str
    issuer_did: str
    vct: str
    key_id: bytes
    requested_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldRecord:
    """A credential this profile holds."""

    credential_id: str
    #: The SD-JWT as the issuer sent it (issuer JWT and every disclosure, no key binding).
    compact: str
    #: Derives the holder key with the identity's seed.
    key_id: bytes
    issuer_did: str
    vct: str
    received_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRequest:
    """A holder's request waiting for this issuer."""

    nonce: str
    #: Who sent it: the messenger identity (Ed25519, 32 bytes) the ISSUED answer goes to.
    requester: bytes
    #: The key the credential is to be bound to (Ed25519, 32 bytes; it proved possession).
    holder: bytes
    vct: str
    note: str
    #: Not a contact when it arrived.
    stranger: bool
    received_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedRecord:
    """A credential this profile issued."""

    credential_id: str
    #: The request it answered (its nonce).
    request: str
    requester: bytes
    holder: bytes
    vct: str
    list_uri: str
    status_index: int
    revoked: bool
    issued_at: float
    expires: float | None
    compact: str


_HELD = "credential_id, compact, key_id, issuer_did, vct, received_at"
_PENDING = "nonce, requester, holder, vct, note, stranger, received_at"
_ISSUED = (
    "credential_id, request, requester, holder, vct, list_uri, status_index, revoked, issued_at, "
    "expires, compact"
)


class Wallet(LocalDb):
    """See the module docstring. One connection, one call at a time (a lock)."""

    WHAT = "wallet"
    SCHEMA = _SCHEMA
    VERSION = WALLET_SCHEMA_VERSION

    def __init__(self, path: str | Path, *, connect: Connect = plain_connect) -> None:
        """Open (or create, mode 0600) ``path`` (``":memory:"`` for a node without a profile) with
        ``connect`` (the node passes one that encrypts it with the identity's store key)."""
        super().__init__(path, connect=connect)

    # --- holder ------------------------------------------------------------------------------------

    def add_own_request(self, request: OwnRequest) -> None:
        """Remember a request we send (the oldest beyond ``MAX_OWN_REQUESTS`` is forgotten)."""
        with self._transaction("add a request") as db:
            db.execute(
                "INSERT OR REPLACE INTO own_requests VALUES (?, ?, ?, ?, ?)",
                (request.nonce, request.issuer_did, request.vct, request.key_id, request.requested_at),
            )
            _trim(db, "own_requests", "requested_at", "nonce", MAX_OWN_REQUESTS)

    def own_request(self, nonce: str) -> OwnRequest | None:
        """Our unanswered request named ``nonce``."""
        with self._transaction("read a request") as db:
            row = db.execute(
                "SELECT nonce, issuer_did, vct, key_id, requested_at FROM own_requests WHERE nonce = ?",
                (nonce,),
            ).fetchone()
        if row is None:
            return None
        return OwnRequest(nonce=row[0], issuer_did=row[1], vct=row[2], key_id=row[3], requested_at=row[4])

    def own_requests(self) -> list[OwnRequest]:
        """Our unanswered requests, oldest first."""
        with self._transaction("list requests") as db:
            rows = db.execute(
                "SELECT nonce, issuer_did, vct, key_id, requested_at FROM own_requests ORDER BY requested_at"
            ).fetchall()
        return [
            OwnRequest(nonce=r[0], issuer_did=r[1], vct=r[2], key_id=r[3], requested_at=r[4]) for r in rows
        ]

    def add_held(self, record: HeldRecord, *, answered: str | None = None) -> bool:
        """Keep a credential (and forget the request ``answered``, if given, in the same transaction).
        False if it was held already (a redelivered control) or ``MAX_HELD`` are held."""
        with self._transaction("add a credential") as db:
            if db.execute("SELECT count(*) FROM held").fetchone()[0] >= MAX_HELD:
                return False  # the request stays: the credential can be taken once there is room
            if answered is not None:
                db.execute("DELETE FROM own_requests WHERE nonce = ?", (answered,))
            cursor = db.execute(
                f"INSERT OR IGNORE INTO held ({_HELD}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.credential_id,
                    record.compact,
                    record.key_id,
                    record.issuer_did,
                    record.vct,
                    record.received_at,
                ),
            )
            return bool(cursor.rowcount)

    def held(self) -> list[HeldRecord]:
        """Credentials held, oldest first."""
        with self._transaction("list credentials") as db:
            rows = db.execute(f"SELECT {_HELD} FROM held ORDER BY received_at").fetchall()
        return [_held(r) for r in rows]

    def held_one(self, credential_id: str) -> HeldRecord | None:
        """A held credential by id."""
        with self._transaction("read a credential") as db:
            row = db.execute(f"SELECT {_HELD} FROM held WHERE credential_id = ?", (credential_id,)).fetchone()
        return None if row is None else _held(row)

    def remove_held(self, credential_id: str) -> bool:
        """Forget a held credential; False if it was not held."""
        with self._transaction("remove a credential") as db:
            return bool(db.execute("DELETE FROM held WHERE credential_id = ?", (credential_id,)).rowcount)

    # --- issuer ------------------------------------------------------------------------------------

    def add_pending(self, request: PendingRequest) -> bool:
        """Keep a holder's request; False if it was answered already (a redelivered control). The same
        requester asking for the same type again replaces its earlier request; beyond the bounds
        (``MAX_PENDING``, ``MAX_PENDING_STRANGERS``) the oldest of the same kind is dropped."""
        with self._transaction("add a pending request") as db:
            if db.execute("SELECT 1 FROM issued WHERE request = ?", (request.nonce,)).fetchone():
                return False
            db.execute(
                "DELETE FROM pending WHERE requester = ? AND vct = ?", (request.requester, request.vct)
            )
            db.execute(
                f"INSERT OR REPLACE INTO pending ({_PENDING}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    request.nonce,
                    request.requester,
                    request.holder,
                    request.vct,
                    request.note,
                    int(request.stranger),
                    request.received_at,
                ),
            )
            if request.stranger:
                _trim(db, "pending", "received_at", "nonce", MAX_PENDING_STRANGERS, where="stranger = 1")
            _trim(db, "pending", "received_at", "nonce", MAX_PENDING)
            return True

    def pending(self) -> list[PendingRequest]:
        """Requests waiting, oldest first."""
        with self._transaction("list pending requests") as db:
            rows = db.execute(f"SELECT {_PENDING} FROM pending ORDER BY received_at").fetchall()
        return [_pending(r) for r in rows]

    def pending_from(self, requester: bytes, vct: str) -> PendingRequest | None:
        """``requester``'s waiting request for a ``vct`` credential."""
        with self._transaction("find a pending request") as db:
            row = db.execute(
                f"SELECT {_PENDING} FROM pending WHERE requester = ? AND vct = ?", (requester, vct)
            ).fetchone()
        return None if row is None else _pending(row)

    def add_issued(self, record: IssuedRecord, *, bits: tuple[str, bytes, float] | None = None) -> None:
        """Record an issued credential and drop the request it answered; with ``bits`` (uri, list
        bytes, now), store that status list in the same transaction (its allocated entry).
        ``StorageError`` beyond ``MAX_ISSUED``."""
        with self._transaction("record an issued credential") as db:
            if db.execute("SELECT count(*) FROM issued").fetchone()[0] >= MAX_ISSUED:
                raise StorageError(f"wallet {self.path}: {MAX_ISSUED:,} credentials issued already")
            db.execute(
                f"INSERT INTO issued ({_ISSUED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.credential_id,
                    record.request,
                    record.requester,
                    record.holder,
                    record.vct,
                    record.list_uri,
                    record.status_index,
                    int(record.revoked),
                    record.issued_at,
                    record.expires,
                    record.compact,
                ),
            )
            db.execute("DELETE FROM pending WHERE nonce = ?", (record.request,))
            if bits is not None:
                _put_list(db, *bits)

    def issued(self, limit: int = 1000) -> list[IssuedRecord]:
        """Credentials issued, newest first."""
        with self._transaction("list issued credentials") as db:
            rows = db.execute(
                f"SELECT {_ISSUED} FROM issued ORDER BY issued_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_issued(r) for r in rows]

    def issued_one(self, credential_id: str) -> IssuedRecord | None:
        """An issued credential by id."""
        with self._transaction("read an issued credential") as db:
            row = db.execute(
                f"SELECT {_ISSUED} FROM issued WHERE credential_id = ?", (credential_id,)
            ).fetchone()
        return None if row is None else _issued(row)

    def set_revoked(self, credential_id: str, *, bits: tuple[str, bytes, float]) -> None:
        """Mark an issued credential revoked and store its list's new bits (uri, bytes, now), at once."""
        with self._transaction("revoke a credential") as db:
            db.execute("UPDATE issued SET revoked = 1 WHERE credential_id = ?", (credential_id,))
            _put_list(db, *bits)

    def status_lists(self) -> list[tuple[str, bytes, int]]:
        """Our own status lists: (uri, bits, version), oldest first."""
        with self._transaction("read status lists") as db:
            rows = db.execute(
                "SELECT uri, bits, version FROM status_lists ORDER BY length(uri), uri"
            ).fetchall()
        return [(r[0], bytes(r[1]), r[2]) for r in rows]

    def put_status_list(self, uri: str, bits: bytes, *, now: float) -> None:
        """Store one of our status lists (its version goes up by one)."""
        with self._transaction("write a status list") as db:
            _put_list(db, uri, bits, now)

    # --- verifier ----------------------------------------------------------------------------------

    def trust(self, did: str, name: str, *, now: float) -> None:
        """Trust issuer ``did`` under ``name`` (again: renames). ``ValueError`` beyond ``MAX_TRUSTED``."""
        with self._transaction("trust an issuer") as db:
            known = db.execute("SELECT 1 FROM trusted WHERE did = ?", (did,)).fetchone()
            if known is None and db.execute("SELECT count(*) FROM trusted").fetchone()[0] >= MAX_TRUSTED:
                raise ValueError(f"at most {MAX_TRUSTED} issuers can be trusted")
            db.execute("INSERT OR REPLACE INTO trusted VALUES (?, ?, ?)", (did, name, now))

    def distrust(self, did: str) -> bool:
        """Stop trusting ``did`` (its cached status tokens go too); False if it was not trusted."""
        with self._transaction("distrust an issuer") as db:
            db.execute("DELETE FROM status_cache WHERE issuer_did = ?", (did,))
            return bool(db.execute("DELETE FROM trusted WHERE did = ?", (did,)).rowcount)

    def trusted(self) -> dict[str, str]:
        """Trusted issuers: did -> name."""
        with self._transaction("list trusted issuers") as db:
            return dict(db.execute("SELECT did, name FROM trusted ORDER BY added_at").fetchall())

    def cache_token(self, uri: str, issuer_did: str, token: str, *, now: float) -> None:
        """Keep the newest status token of list ``uri`` (the caller checked it is newer); the least
        recently received beyond ``MAX_CACHED_TOKENS`` is dropped."""
        with self._transaction("cache a status token") as db:
            db.execute(
                "INSERT OR REPLACE INTO status_cache VALUES (?, ?, ?, ?)", (uri, issuer_did, token, now)
            )
            _trim(db, "status_cache", "received_at", "uri", MAX_CACHED_TOKENS)

    def cached_tokens(self) -> list[tuple[str, str, float]]:
        """Cached status tokens: (issuer did, token, received at), oldest first."""
        with self._transaction("read status tokens") as db:
            rows = db.execute(
                "SELECT issuer_did, token, received_at FROM status_cache ORDER BY received_at"
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


def _trim(db: Any, table: str, order: str, key: str, limit: int, *, where: str = "1") -> None:
    """Delete the oldest rows of ``table`` (by ``order``) matching ``where`` beyond ``limit``."""
    db.execute(
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {where} "
        f"ORDER BY {order} DESC LIMIT -1 OFFSET ?)",
        (limit,),
    )


def _put_list(db: Any, uri: str, bits: bytes, now: float) -> None:
    db.execute(
        "INSERT INTO status_lists VALUES (?, ?, 1, ?) ON CONFLICT (uri) DO UPDATE SET bits = excluded.bits, "
        "version = version + 1, updated_at = excluded.updated_at",
        (uri, bits, now),
    )


def _held(row: Sequence[Any]) -> HeldRecord:
    return HeldRecord(
        credential_id=row[0],
        compact=row[1],
        key_id=bytes(row[2]),
        issuer_did=row[3],
        vct=row[4],
        received_at=row[5],
    )


def _pending(row: Sequence[Any]) -> PendingRequest:
    return PendingRequest(
        nonce=row[0],
        requester=bytes(row[1]),
        holder=bytes(row[2]),
        vct=row[3],
        note=row[4],
        stranger=bool(row[5]),
        received_at=row[6],
    )


def _issued(row: Sequence[Any]) -> IssuedRecord:
    return IssuedRecord(
        credential_id=row[0],
        request=row[1],
        requester=bytes(row[2]),
        holder=bytes(row[3]),
        vct=row[4],
        list_uri=row[5],
        status_index=row[6],
        revoked=bool(row[7]),
        issued_at=row[8],
        expires=row[9],
        compact=row[10],
    )
