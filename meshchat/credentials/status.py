"""Revocation by Token Status List (draft-ietf-oauth-status-list): issuer lists, verifier cache, gossip.

What it is: an issuer keeps one bit per credential it issued (1 = revoked) in a :class:`StatusList`,
signs the whole list as a status list token (a compact JWS, ``typ`` ``statuslist+jwt``) and publishes
it on its gossip topic :func:`status_topic`; verifiers keep the newest token per list in a
:class:`StatusCache` and check credentials offline against it, reporting how old their list is.
What it is not: no networking (the api layer publishes and subscribes), no clock (``now`` is passed).

Choices where the draft leaves room:

- ``uri`` is not a URL but ``meshchat:status:<issuer did>:<list name>``: the list travels over gossip,
  and the uri names its issuer, so a token signed by anyone else for that uri is refused.
- ``bits`` is 1 (valid / revoked). Index ``i`` is bit ``i % 8`` (least significant first) of byte
  ``i // 8``, as the draft says; ``lst`` is base64url of the zlib (RFC 1950) deflated bytes.
- Indexes are drawn at random among the free ones, so an index does not reveal the issuance order
  and neighbouring indexes are not linked to neighbouring holders.
- The token carries ``iat`` and ``ttl``; ``exp`` is optional (honoured when present). The verifier
  decides how old a list it accepts (``Verifier(max_status_age=...)``), since offline checks are the
  point.
"""

from __future__ import annotations

import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from meshchat.errors import CredentialError, DecodeError, MeshchatError, TooLarge
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.jose import (
    b64url_decode,
    b64url_encode,
    did_key,
    parse_jws,
    public_of_did,
    sign_jws,
    verify_jws,
)

__all__ = [
    "DEFAULT_LIST_SIZE",
    "MAX_CACHED_LISTS",
    "MAX_LISTS_PER_ISSUER",
    "MAX_LIST_SIZE",
    "STATUS_TOPIC_PREFIX",
    "STATUS_TYP",
    "STATUS_URI_PREFIX",
    "StatusCache",
    "StatusList",
    "StatusRef",
    "StatusToken",
    "check_status_message",
    "parse_status_token",
    "status_topic",
    "status_uri",
]

#: The JWS ``typ`` of a status list token.
STATUS_TYP: Final = "statuslist+jwt"
#: Every status list uri starts with this, then the issuer's did, ``:``, the list's name.
STATUS_URI_PREFIX: Final = "meshchat:status:"
#: Gossip topic prefix; the issuer's did follows.
STATUS_TOPIC_PREFIX: Final = "/meshchat/status/1/"
#: Entries in a new list: 16,384 credentials in 2 KiB of bits (a few hundred bytes deflated).
DEFAULT_LIST_SIZE: Final = 16_384
#: The largest list accepted, entries: 1 Mi credentials is 128 KiB inflated, the bound on inflation.
MAX_LIST_SIZE: Final = 1 << 20
#: Status lists a verifier keeps (one per issuer list): far beyond the issuers one till trusts.
MAX_CACHED_LISTS: Final = 4096
#: Lists one issuer may fill a verifier's cache with: an issuer splits its credentials over a few
#: lists (by type, by year); the bound stops one issuer from evicting every other issuer's lists.
MAX_LISTS_PER_ISSUER: Final = 64
#: Tolerated clock difference between issuer and verifier, seconds (a list from the future is refused).
CLOCK_SKEW: Final = 30
#: Longest list name in a uri.
MAX_LIST_NAME: Final = 64
#: How many random draws ``allocate`` tries before scanning for a free index.
_RANDOM_DRAWS: Final = 64


@dataclass(frozen=True, slots=True)
class StatusRef:
    """Where a credential's revocation bit lives: the list's uri and the index in it."""

    #: ``meshchat:status:<issuer did>:<list name>``.
    uri: str
    #: The entry in that list.
    index: int


@dataclass(frozen=True, slots=True)
class StatusToken:
    """A parsed and signature-checked status list token."""

    #: The signing issuer's did (also named in ``uri``).
    issuer_did: str
    #: The signing issuer's key.
    issuer: PublicIdentity
    #: The list's uri (the token's ``sub``).
    uri: str
    #: ``iat``: when the issuer signed this version of the list (unix seconds).
    issued_at: float
    #: ``ttl``: how long the issuer suggests caching it, seconds.
    ttl: int
    #: ``exp`` or None.
    expires: float | None
    #: The inflated bit string.
    bits: bytes
    #: The token as received.
    compact: str

    def revoked(self, index: int) -> bool | None:
        """The bit at ``index``, or None when the list is shorter than that."""
        if not 0 <= index < len(self.bits) * 8:
            return None
        return bool(self.bits[index // 8] >> (index % 8) & 1)


def status_uri(issuer_did: str, name: str) -> str:
    """The uri of the list ``name`` of ``issuer_did``."""
    return f"{STATUS_URI_PREFIX}{issuer_did}:{name}"


def status_topic(issuer_did: str) -> str:
    """The gossip topic an issuer publishes its status list tokens on."""
    return STATUS_TOPIC_PREFIX + issuer_did


def _issuer_of_uri(uri: object) -> str | None:
    """The issuer did a well-formed status uri names, else None."""
    if not isinstance(uri, str) or not uri.startswith(STATUS_URI_PREFIX):
        return None
    did, sep, name = uri[len(STATUS_URI_PREFIX) :].rpartition(":")
    if not sep or not did or not name or len(name) > MAX_LIST_NAME:
        return None
    return did


def _inflate(data: bytes) -> bytes:
    """Inflate a zlib stream to at most ``MAX_LIST_SIZE / 8`` bytes, refusing more (a zip bomb)."""
    limit = MAX_LIST_SIZE // 8
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise DecodeError("status list", "lst is not zlib data") from exc
    if inflater.unconsumed_tail:
        raise TooLarge(what="status list", size=limit + 1, limit=limit)
    if not inflater.eof or inflater.unused_data:
        raise DecodeError("status list", "lst is not one complete zlib stream")
    return out


def _int(value: object, *, what: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << 40:
        raise DecodeError("status list token", f"{what} is not a non-negative integer")
    return value


def parse_status_token(token: object) -> StatusToken:
    """Parse and check a status list token: structure, issuer named by its uri, signature, bits."""
    jws = parse_jws(token, what="status list token")  # type: ignore[arg-type]  # parse_jws checks str
    if jws.header.get("typ") != STATUS_TYP:
        raise DecodeError("status list token", f"typ is not {STATUS_TYP}")
    payload = jws.payload
    iss = payload.get("iss")
    uri = payload.get("sub")
    if _issuer_of_uri(uri) != iss or not isinstance(iss, str) or not isinstance(uri, str):
        raise DecodeError("status list token", "sub is not a status list uri of its issuer")
    issuer = public_of_did(iss)
    verify_jws(jws, issuer, what="status list token")
    issued_at = _int(payload.get("iat"), what="iat")
    ttl = _int(payload.get("ttl", 0), what="ttl")
    expires = None if "exp" not in payload else _int(payload["exp"], what="exp")
    status_list = payload.get("status_list")
    if (
        not isinstance(status_list, dict)
        or status_list.get("bits") != 1
        or type(status_list["bits"]) is not int
    ):
        raise DecodeError("status list token", "status_list is not a 1-bit list")
    lst = status_list.get("lst")
    if not isinstance(lst, str):
        raise DecodeError("status list token", "lst is not a string")
    bits = _inflate(b64url_decode(lst, what="status list"))
    return StatusToken(
        issuer_did=iss,
        issuer=issuer,
        uri=uri,
        issued_at=float(issued_at),
        ttl=ttl,
        expires=None if expires is None else float(expires),
        bits=bits,
        compact=jws.compact,
    )


class StatusList:
    """The issuer's side of one list: which indexes are in use, which are revoked; signs tokens."""

    def __init__(self, uri: str, size: int = DEFAULT_LIST_SIZE, bits: bytes | None = None) -> None:
        """A list of ``size`` entries (a multiple of 8), all valid, or the revocation ``bits`` given."""
        if _issuer_of_uri(uri) is None:
            raise ValueError(f"{uri!r} is not a meshchat status list uri")
        if size <= 0 or size % 8 or size > MAX_LIST_SIZE:
            raise ValueError(f"a status list has a positive multiple of 8 entries, at most {MAX_LIST_SIZE}")
        if bits is not None and len(bits) * 8 != size:
            raise ValueError("bits do not match the size")
        self.uri = uri
        self.size = size
        self._revoked = bytearray(bits if bits is not None else size // 8)
        self._used = bytearray(size // 8)
        self._free = size

    @staticmethod
    def _get(bitmap: bytearray, index: int) -> bool:
        return bool(bitmap[index // 8] >> (index % 8) & 1)

    @staticmethod
    def _set(bitmap: bytearray, index: int) -> None:
        bitmap[index // 8] |= 1 << (index % 8)

    def allocate(self, random_bytes: RandomBytes = os.urandom) -> StatusRef:
        """A fresh index, drawn at random among the free ones; ``CredentialError`` if the list is full."""
        if self._free == 0:
            raise CredentialError(f"status list {self.uri} is full ({self.size:,} entries)")
        index = -1
        for _ in range(_RANDOM_DRAWS):
            candidate = int.from_bytes(random_bytes(4), "big") % self.size
            if not self._get(self._used, candidate):
                index = candidate
                break
        else:  # nearly full: every free index, then a random one of them
            free = [i for i in range(self.size) if not self._get(self._used, i)]
            index = free[int.from_bytes(random_bytes(4), "big") % len(free)]
        self._set(self._used, index)
        self._free -= 1
        return StatusRef(uri=self.uri, index=index)

    def revoke(self, index: int) -> None:
        """Mark ``index`` revoked (for good: a revoked credential stays revoked)."""
        if not 0 <= index < self.size:
            raise ValueError(f"index {index} is outside the list (size {self.size})")
        self._set(self._revoked, index)

    def is_revoked(self, index: int) -> bool:
        """True if ``index`` is revoked."""
        return 0 <= index < self.size and self._get(self._revoked, index)

    @property
    def bits(self) -> bytes:
        """The revocation bit string as published."""
        return bytes(self._revoked)

    def token(self, issuer: Identity, *, now: float, ttl: int = 3600) -> str:
        """Sign the current list as a status list token (``iat`` = ``now``)."""
        did = did_key(issuer.public)
        if _issuer_of_uri(self.uri) != did:
            raise ValueError(f"{self.uri} is not a list of {did}")
        payload = {
            "iss": did,
            "sub": self.uri,
            "iat": int(now),
            "ttl": int(ttl),
            "status_list": {"bits": 1, "lst": b64url_encode(zlib.compress(bytes(self._revoked), 9))},
        }
        return sign_jws({"typ": STATUS_TYP}, payload, issuer.sign)

    def to_bytes(self) -> bytes:
        """The list's state for persisting: size, revocation bits, used indexes (canonical msgpack)."""
        return pack({1: self.size, 2: bytes(self._revoked), 3: bytes(self._used)})

    @classmethod
    def from_bytes(cls, uri: str, data: bytes) -> StatusList:
        """Load what :meth:`to_bytes` wrote; ``DecodeError`` if it is not that."""
        value = unpack_canonical(data, what="status list state", limit=MAX_LIST_SIZE // 4 + 64)
        if not isinstance(value, dict) or set(value) != {1, 2, 3}:
            raise DecodeError("status list state", "not a status list")
        size, revoked, used = value[1], value[2], value[3]
        if type(size) is not int or not isinstance(revoked, bytes) or not isinstance(used, bytes):
            raise DecodeError("status list state", "wrong field types")
        if size <= 0 or size % 8 or size > MAX_LIST_SIZE or len(revoked) * 8 != size or len(used) * 8 != size:
            raise DecodeError("status list state", "sizes do not match")
        result = cls(uri, size, revoked)
        result._used = bytearray(used)
        result._free = size - sum(bin(b).count("1") for b in used)
        return result


class StatusCache:
    """The verifier's side: the newest verified token per list, at most ``MAX_CACHED_LISTS`` lists.

    Feed it the tokens of issuers you trust (the api layer subscribes to their topics only): any
    issuer's valid token is accepted, and at most ``MAX_LISTS_PER_ISSUER`` lists are kept per issuer,
    the least recently updated going first, so one issuer cannot push the others out.
    """

    def __init__(self, capacity: int = MAX_CACHED_LISTS) -> None:
        """An empty cache holding at most ``capacity`` lists (the least recently updated go first)."""
        self._capacity = capacity
        self._lists: OrderedDict[str, StatusToken] = OrderedDict()

    def put(self, token: str, *, now: float) -> bool:
        """Verify and keep ``token``; False if it is not newer than the one held (or from the future).

        Raises ``DecodeError`` / ``BadSignature`` for a token that is malformed or not signed by the
        issuer its uri names.
        """
        parsed = parse_status_token(token)
        if parsed.issued_at > now + CLOCK_SKEW or (parsed.expires is not None and parsed.expires <= now):
            return False
        held = self._lists.get(parsed.uri)
        if held is not None and held.issued_at >= parsed.issued_at:
            return False
        self._lists.pop(parsed.uri, None)
        self._lists[parsed.uri] = parsed
        same_issuer = [uri for uri, held in self._lists.items() if held.issuer_did == parsed.issuer_did]
        for uri in same_issuer[: max(0, len(same_issuer) - MAX_LISTS_PER_ISSUER)]:
            del self._lists[uri]
        while len(self._lists) > self._capacity:
            self._lists.popitem(last=False)
        return True

    def lookup(self, ref: StatusRef, issuer_did: str, *, now: float) -> tuple[bool, float] | None:
        """``(revoked, list age in seconds)`` for ``ref``, or None when no usable list is held."""
        token = self._lists.get(ref.uri)
        if token is None or token.issuer_did != issuer_did:
            return None
        if token.expires is not None and token.expires <= now:
            return None
        revoked = token.revoked(ref.index)
        if revoked is None:
            return None
        return revoked, max(0.0, now - token.issued_at)

    def age(self, issuer_did: str, *, now: float) -> float | None:
        """Age of the freshest list held from ``issuer_did``, seconds, or None."""
        times = [t.issued_at for t in self._lists.values() if t.issuer_did == issuer_did]
        return None if not times else max(0.0, now - max(times))

    def tokens(self) -> list[str]:
        """Every token held (to persist; feed them back with :meth:`put`)."""
        return [t.compact for t in self._lists.values()]

    def __len__(self) -> int:
        return len(self._lists)


def check_status_message(topic: str, data: bytes) -> bool:
    """Gossip validator: True if ``data`` is a valid status list token of the issuer ``topic`` names."""
    if not isinstance(topic, str) or not topic.startswith(STATUS_TOPIC_PREFIX) or not isinstance(data, bytes):
        return False
    try:
        token = parse_status_token(data.decode("ascii"))
    except (UnicodeDecodeError, MeshchatError):  # DecodeError, TooLarge, BadSignature
        return False
    return status_topic(token.issuer_did) == topic
