"""``DocumentStore``: co-signing rounds a profile takes part in, in ``documents.db`` beside ``store.db``.

Proposals (with the document when it came inline), the co-signatures, revocations and witness stamps
received or made, controls that arrived before what they refer to ("orphans", replayed when it
arrives), and the stamps this profile gave as a witness (for its rate limit and to answer a repeated
request with the same stamp). Only verified JWS texts are written, so reading them back skips the
signature checks.

The same choices as ``meshchat.files.sqlite``: SQLCipher with the identity's store key when one is
given (plain sqlite for ``":memory:"`` and tests), one transaction per call, WAL with
``synchronous=FULL`` (a control is durable when the call that took it returns), ``sqlite3.Error``
turned into ``StorageError``, ``PRAGMA user_version`` as the schema version. ``batch`` joins several
calls into one transaction: ``CosignCore`` takes each control, and each local call, in one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshchat.localdb import LocalDb
from meshchat.store.encrypted import encrypted_connect

__all__ = ["DOCUMENTS_FILE", "DocumentRecord", "DocumentStore", "OrphanRecord"]

#: The document store's name inside a profile folder.
DOCUMENTS_FILE = "documents.db"
_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE documents (
        number   INTEGER PRIMARY KEY,
        doc_id   TEXT NOT NULL UNIQUE,
        proposal TEXT NOT NULL,
        proposer TEXT NOT NULL,
        expires  REAL,
        content  BLOB,
        received REAL NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE signatures (
        doc_id    TEXT NOT NULL,
        signer    TEXT NOT NULL,
        hash      TEXT NOT NULL,
        compact   TEXT NOT NULL,
        PRIMARY KEY (doc_id, signer)) WITHOUT ROWID""",
    "CREATE INDEX documents_proposer ON documents (proposer, finished)",
    "CREATE INDEX signatures_hash ON signatures (hash)",
    """CREATE TABLE revocations (
        doc_id    TEXT NOT NULL,
        signer    TEXT NOT NULL,
        hash      TEXT NOT NULL,
        compact   TEXT NOT NULL,
        PRIMARY KEY (doc_id, signer)) WITHOUT ROWID""",
    """CREATE TABLE stamps (
        hash      TEXT NOT NULL,
        witness   TEXT NOT NULL,
        seen_at   REAL NOT NULL,
        compact   TEXT NOT NULL,
        PRIMARY KEY (hash, witness)) WITHOUT ROWID""",
    """CREATE TABLE orphans (
        jws       TEXT PRIMARY KEY,
        key       TEXT NOT NULL,
        kind      INTEGER NOT NULL,
        sender    BLOB NOT NULL,
        received  REAL NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX orphans_key ON orphans (key)",
    """CREATE TABLE given (
        hash      TEXT PRIMARY KEY,
        requester BLOB NOT NULL,
        compact   TEXT NOT NULL,
        at        REAL NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX given_requester ON given (requester, at)",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentRecord:
    """A stored round."""

    doc_id: str
    #: The proposal's JWS text (verified when it was stored).
    proposal: str
    #: The document, when it came inline (or the proposer gave it); None otherwise.
    content: bytes | None
    #: When this profile stored it (wall clock).
    received: float
    #: Complete or expired when last looked at (what eviction drops first).
    finished: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphanRecord:
    """A control kept until what it refers to arrives."""

    jws: str
    kind: int
    sender: bytes


class DocumentStore(LocalDb):
    """See the module docstring. One connection, one call at a time (a lock)."""

    WHAT = "document store"
    SCHEMA = _SCHEMA
    VERSION = _SCHEMA_VERSION

    def __init__(self, path: str | Path, *, key: bytes | None = None) -> None:
        """Open (or create, mode 0600) ``path`` (``":memory:"`` for tests or a node without a profile),
        encrypted with ``key`` (the identity's store key) when one is given."""
        super().__init__(path, connect=encrypted_connect(key, schema_version=_SCHEMA_VERSION))

    # --- rounds --------------------------------------------------------------------------------------

    def add_document(
        self,
        doc_id: str,
        proposal: str,
        *,
        proposer: str,
        expires: float | None,
        content: bytes | None,
        received: float,
    ) -> bool:
        """Store a round; False if it was already there (then nothing changes but a missing content)."""
        with self._transaction("add a document") as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO documents (doc_id, proposal, proposer, expires, content, received) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (doc_id, proposal, proposer, expires, content, received),
            )
            if cursor.rowcount == 0 and content is not None:
                db.execute(
                    "UPDATE documents SET content = ? WHERE doc_id = ? AND content IS NULL", (content, doc_id)
                )
            return bool(cursor.rowcount)

    def document(self, doc_id: str) -> DocumentRecord | None:
        """A round by id."""
        with self._transaction("read a document") as db:
            row = db.execute(
                "SELECT doc_id, proposal, content, received, finished FROM documents WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
        if row is None:
            return None
        return DocumentRecord(
            doc_id=row[0], proposal=row[1], content=row[2], received=row[3], finished=bool(row[4])
        )

    def document_ids(self) -> list[str]:
        """Every round's id, the most recently stored first."""
        with self._transaction("list documents") as db:
            return [r[0] for r in db.execute("SELECT doc_id FROM documents ORDER BY number DESC")]

    def count_documents(self) -> int:
        """How many rounds are stored."""
        with self._transaction("count documents") as db:
            count: int = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            return count

    def set_finished(self, doc_id: str, finished: bool) -> None:
        """Note whether a round is complete or expired (eviction drops those first)."""
        with self._transaction("mark a document") as db:
            db.execute("UPDATE documents SET finished = ? WHERE doc_id = ?", (int(finished), doc_id))

    def oldest_finished(self, now: float) -> str | None:
        """The round stored longest ago among those complete or expired at ``now``, if any."""
        with self._transaction("find a finished document") as db:
            row = db.execute(
                "SELECT doc_id FROM documents WHERE finished = 1 OR expires < ? ORDER BY number LIMIT 1",
                (now,),
            ).fetchone()
        return None if row is None else str(row[0])

    def count_open(self, proposer: str, now: float) -> int:
        """How many rounds proposed by ``proposer`` are neither complete nor expired at ``now``."""
        with self._transaction("count open documents") as db:
            count: int = db.execute(
                "SELECT COUNT(*) FROM documents WHERE proposer = ? AND finished = 0 "
                "AND (expires IS NULL OR expires >= ?)",
                (proposer, now),
            ).fetchone()[0]
            return count

    def remove_document(self, doc_id: str) -> None:
        """Forget a round and everything about it."""
        with self._transaction("remove a document") as db:
            db.execute(
                "DELETE FROM stamps WHERE hash IN (SELECT hash FROM signatures WHERE doc_id = ?)", (doc_id,)
            )
            for table in ("signatures", "revocations", "documents"):
                db.execute(f"DELETE FROM {table} WHERE doc_id = ?", (doc_id,))  # fixed names

    # --- signatures and revocations ------------------------------------------------------------------

    def add_signature(self, doc_id: str, signer: str, *, hash: str, compact: str) -> bool:
        """Store ``signer``'s signature; False if it already has one for this round (the first stays)."""
        with self._transaction("add a signature") as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO signatures VALUES (?, ?, ?, ?)", (doc_id, signer, hash, compact)
            )
            return bool(cursor.rowcount)

    def signatures(self, doc_id: str) -> list[tuple[str, str, str]]:
        """A round's signatures: (signer did, signature hash, text)."""
        with self._transaction("read signatures") as db:
            return [
                (r[0], r[1], r[2])
                for r in db.execute(
                    "SELECT signer, hash, compact FROM signatures WHERE doc_id = ? ORDER BY signer", (doc_id,)
                )
            ]

    def signature_by_hash(self, hash: str) -> tuple[str, str, str] | None:
        """The signature whose ``signature_hash`` is ``hash``: (doc id, signer did, text)."""
        with self._transaction("find a signature") as db:
            row = db.execute(
                "SELECT doc_id, signer, compact FROM signatures WHERE hash = ? LIMIT 1", (hash,)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def add_revocation(self, doc_id: str, signer: str, *, hash: str, compact: str) -> bool:
        """Store ``signer``'s revocation (``hash`` names the signature); False if it already has one."""
        with self._transaction("add a revocation") as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO revocations VALUES (?, ?, ?, ?)", (doc_id, signer, hash, compact)
            )
            return bool(cursor.rowcount)

    def revocations(self, doc_id: str) -> list[tuple[str, str, str]]:
        """A round's revocations: (signer did, revoked signature's hash, text)."""
        with self._transaction("read revocations") as db:
            return [
                (r[0], r[1], r[2])
                for r in db.execute(
                    "SELECT signer, hash, compact FROM revocations WHERE doc_id = ? ORDER BY signer",
                    (doc_id,),
                )
            ]

    # --- stamps --------------------------------------------------------------------------------------

    def add_stamp(self, hash: str, witness: str, *, seen_at: float, compact: str, keep: int) -> bool:
        """Store a witness's stamp of signature ``hash``, keeping the ``keep`` earliest (seen_at, witness)
        per signature, so the same ones stay whatever the order of arrival; True if this one is kept and
        was new."""
        with self._transaction("add a stamp") as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO stamps VALUES (?, ?, ?, ?)", (hash, witness, seen_at, compact)
            )
            if not cursor.rowcount:
                return False
            db.execute(
                "DELETE FROM stamps WHERE hash = ? AND witness NOT IN (SELECT witness FROM stamps "
                "WHERE hash = ? ORDER BY seen_at, witness LIMIT ?)",
                (hash, hash, keep),
            )
            kept = db.execute(
                "SELECT 1 FROM stamps WHERE hash = ? AND witness = ?", (hash, witness)
            ).fetchone()
            return kept is not None

    def stamps(self, hash: str) -> list[tuple[str, float, str]]:
        """The stamps of signature ``hash``, earliest first: (witness did, seen at, text)."""
        with self._transaction("read stamps") as db:
            return [
                (r[0], r[1], r[2])
                for r in db.execute(
                    "SELECT witness, seen_at, compact FROM stamps WHERE hash = ? ORDER BY seen_at, witness",
                    (hash,),
                )
            ]

    # --- orphans -------------------------------------------------------------------------------------

    def add_orphan(
        self, key: str, *, kind: int, jws: str, sender: bytes, received: float, limit: int, per_sender: int
    ) -> bool | None:
        """Keep a control until ``key`` (a round id or a signature hash) is known: True if kept now,
        None if it was kept already, False when ``limit`` orphans in all or ``per_sender`` from
        ``sender`` are kept already."""
        with self._transaction("keep an orphan") as db:
            if db.execute("SELECT 1 FROM orphans WHERE jws = ?", (jws,)).fetchone() is not None:
                return None
            if db.execute("SELECT COUNT(*) FROM orphans").fetchone()[0] >= limit:
                return False
            if (
                db.execute("SELECT COUNT(*) FROM orphans WHERE sender = ?", (sender,)).fetchone()[0]
                >= per_sender
            ):
                return False
            db.execute("INSERT INTO orphans VALUES (?, ?, ?, ?, ?)", (jws, key, kind, sender, received))
            return True

    def take_orphans(self, key: str) -> list[OrphanRecord]:
        """Remove and return the controls waiting for ``key``, oldest first."""
        with self._transaction("take orphans") as db:
            rows = db.execute(
                "SELECT jws, kind, sender FROM orphans WHERE key = ? ORDER BY received, jws", (key,)
            ).fetchall()
            db.execute("DELETE FROM orphans WHERE key = ?", (key,))
        return [OrphanRecord(jws=r[0], kind=r[1], sender=r[2]) for r in rows]

    def count_orphans(self) -> int:
        """How many controls wait."""
        with self._transaction("count orphans") as db:
            count: int = db.execute("SELECT COUNT(*) FROM orphans").fetchone()[0]
            return count

    # --- stamps given as a witness -------------------------------------------------------------------

    def given_stamp(self, hash: str) -> str | None:
        """The stamp this profile gave for signature ``hash``, if any."""
        with self._transaction("find a given stamp") as db:
            row = db.execute("SELECT compact FROM given WHERE hash = ?", (hash,)).fetchone()
        return None if row is None else str(row[0])

    def add_given_stamp(
        self, hash: str, *, requester: bytes, compact: str, at: float, forget_before: float
    ) -> None:
        """Remember a stamp given to ``requester`` at ``at``; forget those given before ``forget_before``."""
        with self._transaction("remember a given stamp") as db:
            db.execute("DELETE FROM given WHERE at < ?", (forget_before,))
            db.execute("INSERT OR REPLACE INTO given VALUES (?, ?, ?, ?)", (hash, requester, compact, at))

    def answers_since(self, requester: bytes, since: float) -> int:
        """How many stamps this profile gave ``requester`` since ``since``."""
        with self._transaction("count given stamps") as db:
            count: int = db.execute(
                "SELECT COUNT(*) FROM given WHERE requester = ? AND at >= ?", (requester, since)
            ).fetchone()[0]
            return count
