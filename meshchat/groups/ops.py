"""Group operations: the signed, content-addressed changes a group's membership is made of.

A group is the set of its operations (``meshchat.groups.membership`` merges them). Each operation is
signed by its author's root Ed25519 key and names the operations its author had seen last (its
parents), so the set forms a causal graph. Its id is BLAKE2b-256 of its encoding; the group's id is the
id of its CREATE operation, whose 16 random nonce bytes make the id unguessable.

Wire form: one canonical msgpack map with integer keys (``meshchat.wire.codec``), every field always
present::

    {1: kind, 2: group_id, 3: author, 4: parents, 5: targets, 6: name, 7: nonce, 8: created_at_ms,
     9: signature}

``parents`` and ``targets`` are flat byte strings (concatenated 32-byte ids / keys, ascending and
distinct): msgpack containers are limited to 64 items and a CREATE names up to 1,000 members. The
signature covers ``DOMAIN || the canonical map of keys 1..8``, so no field can change without it.

Per kind (anything else is malformed):

=========  ==========  ============  =====================================  ============  ========
kind       group_id    parents       targets                                name          nonce
=========  ==========  ============  =====================================  ============  ========
CREATE     b""         none          1..MAX_GROUP_MEMBERS, author included  1..64 bytes   16 bytes
ADD        32 bytes    1..16         1..MAX_TARGETS                         ""            b""
REMOVE     32 bytes    1..16         1..MAX_TARGETS                         ""            b""
LEAVE      32 bytes    1..16         none (the author leaves)               ""            b""
PROMOTE    32 bytes    1..16         1..MAX_TARGETS                         ""            b""
DEMOTE     32 bytes    1..16         1..MAX_TARGETS                         ""            b""
RENAME     32 bytes    1..16         none                                   1..64 bytes   b""
ANNOUNCE   32 bytes    1..16         none (from now on only admins post)    ""            b""
=========  ==========  ============  =====================================  ============  ========

``decode_op`` checks the size first (``TooLarge``), then structure, exact types and the rules above
(``DecodeError``), then the author's key and signature (``BadSignature``); it raises nothing else.
Targets are not checked to be Ed25519 points here: that costs a scalar multiplication per key (a
CREATE names up to 1,000) before the signature is known to be good; whoever seals to a member checks
its key then. This module knows nothing of who may do what: that is membership's job.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise

from meshchat.errors import DecodeError, TooLarge
from meshchat.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, KeyCache, PublicIdentity
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "CREATE_NONCE_SIZE",
    "MAX_GROUP_MEMBERS",
    "MAX_NAME_BYTES",
    "MAX_OP_SIZE",
    "MAX_PARENTS",
    "MAX_TARGETS",
    "OP_ID_SIZE",
    "GroupOp",
    "OpKind",
    "decode_op",
    "encode_op",
    "name_problem",
    "op_id_of",
    "sign_op",
]

#: Most members one group holds (the issue's target: a school, a neighbourhood).
MAX_GROUP_MEMBERS = 1000
#: Most keys one ADD/REMOVE/PROMOTE/DEMOTE names: a whole group at once, no more.
MAX_TARGETS = 1000
#: Most parents one operation names: an author merging more concurrent heads merges them in steps.
MAX_PARENTS = 16
#: Longest group name, utf-8 bytes (a title on a phone screen).
MAX_NAME_BYTES = 64
#: Largest encoded operation, bytes: a CREATE naming 1,000 members is ~32 KB plus framing.
MAX_OP_SIZE = 40 * 1024
#: Size of an operation id (and so of a group id), bytes.
OP_ID_SIZE = 32
#: Random bytes in a CREATE: nobody can guess a group id from its creator, members and name.
CREATE_NONCE_SIZE = 16

_DOMAIN = b"meshchat/group-op/v1\x00"
_WHAT = "group operation"
_MAX_CREATED_AT = 2**63 - 1
_K_KIND, _K_GROUP, _K_AUTHOR, _K_PARENTS, _K_TARGETS, _K_NAME, _K_NONCE, _K_CREATED, _K_SIGNATURE = range(
    1, 10
)
_FIELDS = frozenset(range(1, 10))
#: Bidirectional overrides and isolates (Unicode category Cf): they can make a name display as
#: another; other Cf characters (zero-width joiners in emoji) are allowed.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class OpKind(IntEnum):
    """What an operation does to the group."""

    #: Founds the group: its targets are the first members, its author the first admin.
    CREATE = 1
    #: An admin adds members.
    ADD = 2
    #: An admin removes members (admins included).
    REMOVE = 3
    #: A member leaves (the author removes itself).
    LEAVE = 4
    #: An admin makes members admins.
    PROMOTE = 5
    #: An admin takes the admin role from members.
    DEMOTE = 6
    #: An admin renames the group.
    RENAME = 7
    #: From now on only admins post in the group (an announcements group; members read, react by
    #: receipts). One way: a group that should be open again is a new group.
    ANNOUNCE = 8


_TARGETED = frozenset((OpKind.ADD, OpKind.REMOVE, OpKind.PROMOTE, OpKind.DEMOTE))
_NAMED = frozenset((OpKind.CREATE, OpKind.RENAME))


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a group name (None if nothing): 1 to ``MAX_NAME_BYTES`` utf-8
    bytes, no control or bidi-control characters (the rule CREATE and RENAME enforce)."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_NAME_BYTES:
        return f"name must be 1 to {MAX_NAME_BYTES} utf-8 bytes, not {size}"
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            return f"name contains the control character U+{ord(char):04X}"
    return None


def _sorted_ids(values: tuple[bytes, ...]) -> bool:
    return all(type(v) is bytes and len(v) == OP_ID_SIZE for v in values) and all(
        a < b for a, b in pairwise(values)
    )


def _problem(
    *,
    kind: object,
    group_id: object,
    author: object,
    parents: tuple[bytes, ...],
    targets: tuple[bytes, ...],
    name: object,
    nonce: object,
    created_at_ms: object,
    signature: object,
) -> str | None:
    """What is wrong with these fields for their kind (None if nothing): shared by decode and construction."""
    if type(kind) is not OpKind:
        return f"unknown kind {kind!r}"
    if type(author) is not bytes or len(author) != PUBLIC_KEY_SIZE:
        return "author must be a 32-byte key"
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        return f"signature must be {SIGNATURE_SIZE} bytes"
    if type(created_at_ms) is not int or not 0 <= created_at_ms <= _MAX_CREATED_AT:
        return "created_at_ms must be an integer between 0 and 2**63 - 1"
    if type(group_id) is not bytes or type(nonce) is not bytes or type(name) is not str:
        return "group_id, nonce or name has the wrong type"
    if not _sorted_ids(parents) or not _sorted_ids(targets):
        return "parents and targets must be ascending, distinct 32-byte values"
    create = kind is OpKind.CREATE
    if len(group_id) != (0 if create else OP_ID_SIZE):
        return "a CREATE has no group id; every other operation names its 32-byte group id"
    if len(nonce) != (CREATE_NONCE_SIZE if create else 0):
        return f"a CREATE carries a {CREATE_NONCE_SIZE}-byte nonce; no other operation has one"
    if not (len(parents) == 0 if create else 0 < len(parents) <= MAX_PARENTS):
        return f"a CREATE has no parents; every other operation names 1 to {MAX_PARENTS}"
    if create:
        if not 0 < len(targets) <= MAX_GROUP_MEMBERS or author not in targets:
            return f"a CREATE names 1 to {MAX_GROUP_MEMBERS} members, its author among them"
    elif kind in _TARGETED:
        if not 0 < len(targets) <= MAX_TARGETS:
            return f"a {kind.name} names 1 to {MAX_TARGETS} members"
    elif targets:
        return f"a {kind.name} names no members"
    if kind in _NAMED:
        return name_problem(name)
    return "only CREATE and RENAME carry a name" if name else None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupOp:
    """One signed group operation. Construction checks the per-kind rules (``ValueError``), not the
    signature: only ``sign_op`` and ``decode_op`` make operations whose signature is known good."""

    #: What it does.
    kind: OpKind
    #: The group's id (the CREATE's op id); b"" in the CREATE itself.
    group_id: bytes
    #: The author's 32-byte Ed25519 public key.
    author: bytes
    #: Ascending, distinct ids of the operations the author had seen last; () for CREATE.
    parents: tuple[bytes, ...]
    #: Ascending, distinct 32-byte member keys it concerns (CREATE: the first members, author included).
    targets: tuple[bytes, ...]
    #: The group name (CREATE, RENAME); "" otherwise.
    name: str
    #: CREATE: 16 random bytes; b"" otherwise.
    nonce: bytes
    #: The author's clock when signing, ms since the unix epoch: a claim shown to users, never an order.
    created_at_ms: int
    #: Ed25519 signature by ``author`` over DOMAIN and every field above.
    signature: bytes
    #: The id, computed once (an op is immutable; cores ask for ids all the time).
    _id: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _problem(
            kind=self.kind,
            group_id=self.group_id,
            author=self.author,
            parents=self.parents,
            targets=self.targets,
            name=self.name,
            nonce=self.nonce,
            created_at_ms=self.created_at_ms,
            signature=self.signature,
        )
        if problem is not None:
            raise ValueError(f"invalid group operation: {problem}")

    @property
    def op_id(self) -> bytes:
        """BLAKE2b-256 of the encoding; for a CREATE this is the group id."""
        if not self._id:
            object.__setattr__(self, "_id", op_id_of(encode_op(self)))  # frozen: set once, lazily
        return self._id


def op_id_of(encoded: bytes) -> bytes:
    """The id of the operation encoded as ``encoded`` (saves re-encoding one just decoded)."""
    return hashlib.blake2b(encoded, digest_size=OP_ID_SIZE).digest()


def _unsigned_map(
    *,
    kind: int,
    group_id: bytes,
    author: bytes,
    parents: tuple[bytes, ...],
    targets: tuple[bytes, ...],
    name: str,
    nonce: bytes,
    created_at_ms: int,
) -> dict[int, object]:
    return {
        _K_KIND: int(kind),
        _K_GROUP: group_id,
        _K_AUTHOR: author,
        _K_PARENTS: b"".join(parents),
        _K_TARGETS: b"".join(targets),
        _K_NAME: name,
        _K_NONCE: nonce,
        _K_CREATED: created_at_ms,
    }


def _signed_bytes(fields: dict[int, object]) -> bytes:
    return _DOMAIN + pack(fields)


def sign_op(
    identity: Identity,
    *,
    kind: OpKind,
    group_id: bytes,
    parents: Iterable[bytes],
    targets: Iterable[bytes] = (),
    name: str = "",
    nonce: bytes = b"",
    created_at_ms: int,
) -> GroupOp:
    """Sign a new operation as ``identity``. Parents and targets may come in any order (they are sorted
    and de-duplicated). Raises ``ValueError`` if the fields break the per-kind rules."""
    parent_ids = tuple(sorted(set(parents)))
    target_keys = tuple(sorted(set(targets)))
    author = identity.public.ed25519
    problem = _problem(
        kind=kind,
        group_id=group_id,
        author=author,
        parents=parent_ids,
        targets=target_keys,
        name=name,
        nonce=nonce,
        created_at_ms=created_at_ms,
        signature=bytes(SIGNATURE_SIZE),
    )
    if problem is not None:
        raise ValueError(f"invalid group operation: {problem}")
    fields = _unsigned_map(
        kind=kind,
        group_id=group_id,
        author=author,
        parents=parent_ids,
        targets=target_keys,
        name=name,
        nonce=nonce,
        created_at_ms=created_at_ms,
    )
    return GroupOp(
        kind=kind,
        group_id=group_id,
        author=author,
        parents=parent_ids,
        targets=target_keys,
        name=name,
        nonce=nonce,
        created_at_ms=created_at_ms,
        signature=identity.sign(_signed_bytes(fields)),
    )


def encode_op(op: GroupOp) -> bytes:
    """The canonical bytes of ``op``; ``TooLarge`` beyond ``MAX_OP_SIZE`` (no valid op is)."""
    fields = _unsigned_map(
        kind=op.kind,
        group_id=op.group_id,
        author=op.author,
        parents=op.parents,
        targets=op.targets,
        name=op.name,
        nonce=op.nonce,
        created_at_ms=op.created_at_ms,
    )
    fields[_K_SIGNATURE] = op.signature
    data = pack(fields)
    if len(data) > MAX_OP_SIZE:
        raise TooLarge(what=_WHAT, size=len(data), limit=MAX_OP_SIZE)
    return data


def _split(value: object, field: str) -> tuple[bytes, ...]:
    if type(value) is not bytes or len(value) % OP_ID_SIZE:
        raise DecodeError(_WHAT, f"{field} must be a whole number of 32-byte values")
    return tuple(value[i : i + OP_ID_SIZE] for i in range(0, len(value), OP_ID_SIZE))


def decode_op(data: bytes, *, key_cache: KeyCache | None = None) -> GroupOp:
    """Parse and verify one operation: ``TooLarge``, ``DecodeError`` or ``BadSignature``, nothing else.

    Pass a ``key_cache`` to check each author's key only once across calls.
    """
    fields = unpack_canonical(data, what=_WHAT, limit=MAX_OP_SIZE)
    if not isinstance(fields, dict) or fields.keys() != _FIELDS:
        raise DecodeError(_WHAT, f"expected a map with keys {sorted(_FIELDS)}")
    raw_kind = fields[_K_KIND]
    if type(raw_kind) is not int or raw_kind not in OpKind._value2member_map_:
        raise DecodeError(_WHAT, f"unknown kind {raw_kind!r}")
    kind = OpKind(raw_kind)
    parents = _split(fields[_K_PARENTS], "parents")
    targets = _split(fields[_K_TARGETS], "targets")
    group_id, author, name = fields[_K_GROUP], fields[_K_AUTHOR], fields[_K_NAME]
    nonce, created_at_ms, signature = fields[_K_NONCE], fields[_K_CREATED], fields[_K_SIGNATURE]
    problem = _problem(
        kind=kind,
        group_id=group_id,
        author=author,
        parents=parents,
        targets=targets,
        name=name,
        nonce=nonce,
        created_at_ms=created_at_ms,
        signature=signature,
    )
    if problem is not None:
        raise DecodeError(_WHAT, problem)
    assert type(author) is bytes and type(signature) is bytes  # checked by _problem; for mypy
    public = PublicIdentity.from_bytes(author) if key_cache is None else key_cache.public_identity(author)
    signed = dict(fields)
    del signed[_K_SIGNATURE]
    public.verify(_signed_bytes(signed), signature, what=_WHAT)
    assert type(group_id) is bytes and type(name) is str and type(nonce) is bytes
    assert type(created_at_ms) is int
    return GroupOp(
        kind=kind,
        group_id=group_id,
        author=author,
        parents=parents,
        targets=targets,
        name=name,
        nonce=nonce,
        created_at_ms=created_at_ms,
        signature=signature,
    )
