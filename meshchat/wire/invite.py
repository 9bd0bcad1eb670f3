"""Invites: a signed text token (and QR code) that hands someone your public key, name and addresses.

Text form: ``MESHCHAT:`` followed by unpadded RFC 4648 base32 of ``version byte || msgpack map``::

    1: Ed25519 public key (32)   2: display name (str)   3: multiaddrs (array of str)   4: signature (64)
    5: mailboxes (array of multiaddrs ending in /p2p/<PeerId>; present only when not empty)
    6: prekey bundle (bytes, ``meshchat.sessions.PrekeyBundle``; present only when given)
    7: stamp cost (int, leading zero bits a stranger's first message must carry; present only when given)

The signature covers a domain string, the version and the canonical encoding of every field but 4, so
changing any character of the token is detected. Field 5 names the mailboxes the inviter syncs from:
senders store messages for it there. An invite without mailboxes is byte for byte what it was before
field 5 existed. Field 6 is the inviter's signed prekey bundle, from which a new contact starts the
forward-secret session before the inviter was ever online (the wire layer keeps it as opaque bytes,
at most ``MAX_BUNDLE_SIZE``; ``meshchat.sessions`` reads it). Base32 upper case fits the QR
alphanumeric mode (denser codes) and survives being read aloud or retyped in either case.

Field 7 is the proof of work the inviter asks of someone it has not added yet
(``meshchat.crypto.stamps``); absent, the sender uses ``DEFAULT_STAMP_COST``.

An invite proves only that its holder of the key wrote it; a person still compares safety numbers.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import segno

from meshchat.errors import BadInvite, DecodeError, UnsupportedVersion
from meshchat.identity import Identity, PublicIdentity
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "INVITE_PREFIX",
    "INVITE_VERSION",
    "MAX_ADDRS",
    "MAX_BUNDLE_SIZE",
    "MAX_INVITE_STAMP_COST",
    "MAX_NAME_LENGTH",
    "Invite",
]

#: What every invite token starts with.
INVITE_PREFIX = "MESHCHAT:"
#: The invite format version this meshchat writes and reads.
INVITE_VERSION = 1
#: Longest display name, in characters (enough for any real name; keeps the QR code scannable).
MAX_NAME_LENGTH = 64
#: Most multiaddrs one invite carries.
MAX_ADDRS = 8
#: Largest prekey bundle an invite carries, bytes (a signed prekey and an ML-KEM-768 prekey: ~1.4 KB).
MAX_BUNDLE_SIZE = 2048
#: Highest stamp cost an invite may ask (``meshchat.crypto.stamps.MAX_STAMP_COST``, repeated here:
#: the wire layer sits below crypto): 2^28 hashes, minutes of a sender's CPU, never hours.
MAX_INVITE_STAMP_COST = 28
#: Longest multiaddr text accepted.
MAX_ADDR_LENGTH = 256
#: Longest invite text, characters: what one QR code holds in alphanumeric mode at error level M
#: (version 40). ``create`` refuses a bigger invite, so every invite has a QR code; parsing stops there.
MAX_INVITE_TEXT = 3391
#: Zero-width joiner and non-joiner: format characters that emoji sequences and Persian, Hindi and
#: other scripts need in ordinary names. Every other control or format character (bidi overrides
#: among them) stays refused.
_ALLOWED_FORMAT_CHARACTERS = frozenset("\u200c\u200d")
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x21, 0x7F))
_SIGNING_DOMAIN = b"meshchat/invite/v1\x00"
_K_KEY, _K_NAME, _K_ADDRS, _K_SIGNATURE, _K_MAILBOXES, _K_BUNDLE, _K_STAMP_COST = 1, 2, 3, 4, 5, 6, 7
_REQUIRED = frozenset({_K_KEY, _K_NAME, _K_ADDRS, _K_SIGNATURE})


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise BadInvite("display name is not text")
    if len(name) > MAX_NAME_LENGTH:
        raise BadInvite(f"display name has {len(name)} characters; the limit is {MAX_NAME_LENGTH}")
    if any(unicodedata.category(ch).startswith("C") and ch not in _ALLOWED_FORMAT_CHARACTERS for ch in name):
        raise BadInvite("display name contains control, format or unassigned characters")
    if not unicodedata.is_normalized("NFC", name):
        raise BadInvite("display name is not in Unicode normal form C")
    return name


def _check_addrs(addrs: object, *, what: str = "addresses") -> tuple[str, ...]:
    if not isinstance(addrs, tuple) or len(addrs) > MAX_ADDRS:
        raise BadInvite(f"{what} must be a sequence of at most {MAX_ADDRS} multiaddrs")
    for addr in addrs:
        if (
            not isinstance(addr, str)
            or not addr.startswith("/")
            or len(addr) > MAX_ADDR_LENGTH
            or not _PRINTABLE_ASCII.issuperset(addr)
        ):
            raise BadInvite(f"not a multiaddr (printable ASCII starting with /): {str(addr)[:40]!r}")
    return addrs


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite:
    """A verified invite: whose key it is, what they call themselves, where to reach them."""

    #: The inviter's public key.
    public: PublicIdentity
    #: The name the inviter chose (not verified by anyone; shown to the person adding the contact).
    name: str
    #: Multiaddrs where the inviter may be reached, possibly none.
    addrs: tuple[str, ...]
    #: The inviter's signature over the other fields.
    signature: bytes
    #: Mailboxes the inviter syncs from (multiaddrs ending in ``/p2p/<PeerId>``), possibly none.
    mailboxes: tuple[str, ...] = ()
    #: The inviter's encoded prekey bundle (b"": none), checked by ``meshchat.sessions`` when used.
    bundle: bytes = b""
    #: The stamp cost (bits) the inviter asks of a first message from someone it has not added; None:
    #: the sender's default (``meshchat.crypto.stamps.DEFAULT_STAMP_COST``).
    stamp_cost: int | None = None

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        name: str = "",
        addrs: Sequence[str] = (),
        mailboxes: Sequence[str] = (),
        bundle: bytes = b"",
        stamp_cost: int | None = None,
    ) -> Invite:
        """Sign an invite for ``identity``. Raises ``BadInvite`` for a name, address or bundle out of
        limits, or an invite too long for one QR code."""
        name = _check_name(unicodedata.normalize("NFC", name))
        checked_addrs = _check_addrs(tuple(addrs))
        checked_mailboxes = _check_mailboxes(tuple(mailboxes))
        fields: dict[int, object] = {_K_KEY: identity.public.ed25519, _K_NAME: name, _K_ADDRS: checked_addrs}
        if checked_mailboxes:
            fields[_K_MAILBOXES] = checked_mailboxes
        if bundle:
            fields[_K_BUNDLE] = _check_bundle(bundle)
        if stamp_cost is not None:
            fields[_K_STAMP_COST] = _check_stamp_cost(stamp_cost)
        signature = identity.sign(_signed(fields))
        invite = cls(
            public=identity.public,
            name=name,
            addrs=checked_addrs,
            signature=signature,
            mailboxes=checked_mailboxes,
            bundle=bundle,
            stamp_cost=stamp_cost,
        )
        size = len(invite.to_text())
        if size > MAX_INVITE_TEXT:
            raise BadInvite(f"the invite would be {size:,} characters; the limit is {MAX_INVITE_TEXT:,}")
        return invite

    def to_text(self) -> str:
        """The token to paste or send: ``MESHCHAT:`` + base32."""
        fields: dict[int, object] = {
            _K_KEY: self.public.ed25519,
            _K_NAME: self.name,
            _K_ADDRS: self.addrs,
            _K_SIGNATURE: self.signature,
        }
        if self.mailboxes:
            fields[_K_MAILBOXES] = self.mailboxes
        if self.bundle:
            fields[_K_BUNDLE] = self.bundle
        if self.stamp_cost is not None:
            fields[_K_STAMP_COST] = self.stamp_cost
        raw = bytes([INVITE_VERSION]) + pack(fields)
        return INVITE_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def from_text(cls, text: str) -> Invite:
        """Parse and verify a token. Raises ``BadInvite``, ``UnsupportedVersion`` or ``BadSignature``."""
        token = "".join(text.split())
        if len(token) > MAX_INVITE_TEXT:
            raise BadInvite(f"{len(token)} characters is longer than any invite ({MAX_INVITE_TEXT})")
        if not token.upper().startswith(INVITE_PREFIX):
            raise BadInvite(f"does not start with {INVITE_PREFIX}")
        body = token[len(INVITE_PREFIX) :].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError) as exc:
            raise BadInvite("not base32 text") from exc
        if not raw:
            raise BadInvite("empty")
        if base64.b32encode(raw).decode("ascii").rstrip("=") != body:
            # b32decode ignores the unused low bits of the last character; one invite, one text.
            raise BadInvite("not canonical base32 (the last character was altered)")
        if raw[0] != INVITE_VERSION:
            raise UnsupportedVersion(what="invite", version=raw[0], supported=(INVITE_VERSION,))
        try:
            fields = unpack_canonical(raw[1:], what="invite", limit=MAX_INVITE_TEXT)
        except DecodeError as exc:
            raise BadInvite(exc.problem) from exc
        if not isinstance(fields, dict) or not _REQUIRED <= fields.keys() <= _REQUIRED | {
            _K_MAILBOXES,
            _K_BUNDLE,
            _K_STAMP_COST,
        }:
            raise BadInvite(
                "expected a map with keys 1-4 (and 5, mailboxes; 6, prekey bundle; 7, stamp cost)"
            )
        signature = fields.pop(_K_SIGNATURE)
        if not isinstance(signature, bytes):
            raise BadInvite("signature is not bytes")
        name, addrs = _check_name(fields[_K_NAME]), _check_addrs(fields[_K_ADDRS])
        mailboxes = _check_mailboxes(fields.get(_K_MAILBOXES, ()))
        if _K_MAILBOXES in fields and not mailboxes:
            raise BadInvite("an empty mailbox list is left out, not written (one invite, one text)")
        bundle = _check_bundle(fields[_K_BUNDLE]) if _K_BUNDLE in fields else b""
        stamp_cost = _check_stamp_cost(fields[_K_STAMP_COST]) if _K_STAMP_COST in fields else None
        key = fields[_K_KEY]
        try:
            public = PublicIdentity.from_bytes(key)
        except DecodeError as exc:
            raise BadInvite(f"public key: {exc.problem}") from exc
        public.verify(_signed(fields), signature, what="invite")
        return cls(
            public=public,
            name=name,
            addrs=addrs,
            signature=signature,
            mailboxes=mailboxes,
            bundle=bundle,
            stamp_cost=stamp_cost,
        )

    def qr(self) -> segno.QRCode:
        """A QR code of the token; ``.save("invite.png")`` or ``.terminal()`` it."""
        return segno.make_qr(self.to_text(), error="m")


def _check_bundle(bundle: object) -> bytes:
    if type(bundle) is not bytes or not 0 < len(bundle) <= MAX_BUNDLE_SIZE:
        raise BadInvite(f"the prekey bundle must be 1 to {MAX_BUNDLE_SIZE:,} bytes")
    return bundle


def _check_stamp_cost(cost: object) -> int:
    if type(cost) is not int or not 0 <= cost <= MAX_INVITE_STAMP_COST:
        raise BadInvite(f"the stamp cost must be a whole number of bits, 0 to {MAX_INVITE_STAMP_COST}")
    return cost


def _check_mailboxes(mailboxes: object) -> tuple[str, ...]:
    checked = _check_addrs(mailboxes, what="mailboxes")
    for addr in checked:
        if "/p2p/" not in addr:
            raise BadInvite(f"a mailbox address must end in /p2p/<PeerId>: {addr[:40]!r}")
    return checked


def _signed(fields: dict[int, object]) -> bytes:
    return _SIGNING_DOMAIN + bytes([INVITE_VERSION]) + pack(fields)
