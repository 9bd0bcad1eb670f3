"""Devices: the signed, versioned list of a person's device keys, and the request a new device shows.

A person is a root identity: the Ed25519 key in their invite, from which their safety number is
computed. Each of their devices has its own Ed25519 device key (its PeerId, inbox tag and sessions).
The primary device's key *is* the root key, so a profile made before devices existed is a one-device
person with nothing to migrate; linked devices get fresh keys.

**The device list** (:class:`DeviceList`) names the person's root, a version and 1 to ``MAX_DEVICES``
devices (key, name, when added), the root first, and is signed by the root key. A contact who holds the
list knows exactly which device keys speak for the person, and sends each message once per device.

*Only the root signs.* A device key certifies nothing: the root is what contacts verified (safety
number, invite), so only a signature by it can bind a new key to the person. A linked device therefore
cannot add or remove devices, and stealing a laptop yields one device key, which the primary removes,
not the power to re-certify itself. (The price: linking needs the primary. Losing the primary loses
the identity, as it does today.)

*The version rule.* Every change signs ``version + 1``; a receiver keeps the list with the highest
version it has seen for that root and ignores any list with a lower or equal version
(:meth:`DeviceList.replaces`). A removed device cannot roll the list back to one that still names it:
it never had the root key, so it cannot sign a list with a higher version, and every list it may
replay (older ones, signed by the root when it was still in) has a version the contact already passed
once the new list reached it. What the replay can still do is reach a contact *before* the new list
does; the network layer closes that window by sending the new list to every contact at once (below).
Two different lists with the same version mean the root key signed twice (a restored backup running
beside the original): the first one seen stays, and the network layer may report the conflict.

**Bounds** (every field a peer sends is bounded and checked on decode, before the signature):
``MAX_DEVICES`` = 16, because a message to a person is sealed once per device, so the list sets the
fan-out of every send (Signal allows 5 linked devices, WhatsApp 4: 16 leaves room for phones, laptops
and tablets while keeping a send at most 16 seals and a list under 5 KB, one envelope). Names follow
the invite rules: at most ``MAX_NAME_LENGTH`` (64) characters, NFC, no control, format (except the
zero-width joiners scripts and emoji need) or unassigned characters, so a name cannot reorder text
around it or hide characters. A link request carries at most ``MAX_ADDRS`` (8) multiaddrs of at most
``MAX_ADDR_LENGTH`` (256) printable ASCII characters, like an invite, and its text at most
``MAX_LINK_TEXT`` characters, what one QR code holds.

**Linking** (:class:`LinkRequest`):

1. The new device makes its key and a request (key, name, the addresses where it listens, a random
   nonce, the time), signs it with its new key (proving it holds it), and shows it as text
   (``MESHCHAT-LINK:`` + base32) and as a QR code, with its six-digit comparison code (:meth:`code`).
2. The person moves the request to the primary (scans the QR, or pastes the text). The primary parses
   it (:meth:`LinkRequest.from_text`: refused when malformed, tampered, signed by another key, or older
   than ``LINK_REQUEST_TTL``) and shows the same code; the person checks that both screens show the
   same six digits, which catches a request swapped on its way.
3. The primary adds the device (:meth:`DeviceList.with_device` signs ``version + 1``) and sends the
   new list to the new device (dialling the addresses in the request) and to every contact.

Six digits are 20 bits: the code catches a swapped request only if making a request with the same
code costs more than an attacker can spend while the person looks. The code is therefore a scrypt
hash (16 MiB, ~35 ms a try on one core: the scrypt paper's interactive-login cost), and a request is
accepted for ten minutes only, so a table of ready-made requests is worthless ten minutes later.
That stops a casual swap, not an attacker with racks of GPUs sitting in the channel the text crosses.
Scanning the QR straight off the other screen leaves no channel in between at all: prefer it; where
the text had to travel through something untrusted, compare the new device's full fingerprint
(``Device.public.fingerprint``, 30 digits) instead.

**Left to the network layer**: carrying the list (as opaque bytes, at most ``MAX_DEVICE_LIST_SIZE``)
to the new device and to every contact, and to the person's other devices; on the new device, checking
that the list it receives names its own key and showing the root's fingerprint for the person to
compare with the primary's; on a contact, keeping the highest-version list per root (persisted, after
checking that the root is the contact's), telling the user "Bob added a device" from
:meth:`DeviceList.diff`, and sealing nothing to a removed device again; on the primary, approving a
request once: a request stays valid for ``LINK_REQUEST_TTL`` and can be shown again meanwhile; while
its key is listed ``with_device`` refuses it, but a device removed within those minutes could be
re-added by a second approval, which remembering approved nonces that long would refuse.

Why here and not in ``meshchat.wire``: the list is what an identity *is* now (DESIGN.md puts it in
``identity``), and every layer above (wire invites, crypto, sessions, store) must be able to check
that a device key speaks for a person. ``identity`` may not import ``wire``, so this module has its
own byte layout instead of canonical msgpack: fixed-size fields and exact length prefixes, one byte
string per value by construction, every byte consumed. The few name and address rules of
``meshchat.wire.invite`` are copied (they are a handful of lines), with the same limits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import segno

from meshchat.errors import DecodeError, Expired, TooLarge, UnsupportedVersion
from meshchat.identity.keys import SIGNATURE_SIZE, Identity, PublicIdentity, RandomBytes
from meshchat.identity.peerid import PUBLIC_KEY_SIZE

__all__ = [
    "DEVICE_LIST_VERSION",
    "LINK_CLOCK_SKEW",
    "LINK_CODE_DIGITS",
    "LINK_NONCE_SIZE",
    "LINK_PREFIX",
    "LINK_REQUEST_TTL",
    "LINK_REQUEST_VERSION",
    "MAX_ADDRS",
    "MAX_ADDR_LENGTH",
    "MAX_DEVICES",
    "MAX_DEVICE_LIST_SIZE",
    "MAX_LINK_TEXT",
    "MAX_NAME_LENGTH",
    "Device",
    "DeviceList",
    "LinkRequest",
]

#: Most devices one person has, root included: the fan-out of every message to them (see above).
MAX_DEVICES = 16
#: Longest device name, characters (as an invite's display name).
MAX_NAME_LENGTH = 64
#: Most multiaddrs one link request carries (as an invite).
MAX_ADDRS = 8
#: Longest multiaddr text accepted (as an invite).
MAX_ADDR_LENGTH = 256
#: How long a link request is accepted after it was made, seconds: long enough to walk to the other
#: device, short enough that a leaked or ready-made request is soon worthless.
LINK_REQUEST_TTL = 600
#: How far in the future a request's time may lie, seconds: two devices of one person share a time
#: source or nearly; more would stretch ``LINK_REQUEST_TTL``.
LINK_CLOCK_SKEW = 300
#: Random bytes in a link request: two requests from one key never look alike (nor share a code).
LINK_NONCE_SIZE = 16
#: Digits of the comparison code both screens show.
LINK_CODE_DIGITS = 6
#: What every link request text starts with.
LINK_PREFIX = "MESHCHAT-LINK:"
#: The device list byte format this meshchat writes and reads.
DEVICE_LIST_VERSION = 1
#: The link request format this meshchat writes and reads.
LINK_REQUEST_VERSION = 1
#: Longest link request text, characters: what one QR code holds in alphanumeric mode at error level
#: M (version 40), as for invites. ``create`` refuses a longer request; parsing stops there.
MAX_LINK_TEXT = 3391

_U64_MAX = 2**64 - 1
# UTF-8 needs at most 4 bytes a character, so no valid name is longer than this in bytes.
_MAX_NAME_BYTES = 4 * MAX_NAME_LENGTH
_DEVICE_FIXED = PUBLIC_KEY_SIZE + 8 + 2  # key, added (u64), name length (u16)
#: Largest encoded device list, bytes (16 devices with the longest names: 4,874).
MAX_DEVICE_LIST_SIZE = (
    1 + PUBLIC_KEY_SIZE + 8 + 1 + MAX_DEVICES * (_DEVICE_FIXED + _MAX_NAME_BYTES) + SIGNATURE_SIZE
)
_LIST_DOMAIN = b"meshchat/devices/v1\x00"
_LINK_DOMAIN = b"meshchat/link/v1\x00"
_CODE_SALT = b"meshchat/link-code/v1\x00"
# scrypt cost of the comparison code: 128 * r * N = 16 MiB and ~35 ms a try (the scrypt paper's
# interactive-login parameters); maxmem leaves OpenSSL room above the 16 MiB it needs.
_CODE_SCRYPT_N, _CODE_SCRYPT_R, _CODE_SCRYPT_P = 2**14, 8, 1
_CODE_SCRYPT_MAXMEM = 64 * 2**20
# Zero-width joiner and non-joiner: format characters emoji and several scripts need in names.
_ALLOWED_FORMAT_CHARACTERS = frozenset("\u200c\u200d")
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x21, 0x7F))


def _name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid device name (the invite rules), or None."""
    if type(name) is not str:
        return "device name is not text"
    if len(name) > MAX_NAME_LENGTH:
        return f"device name has {len(name)} characters; the limit is {MAX_NAME_LENGTH}"
    if any(unicodedata.category(ch).startswith("C") and ch not in _ALLOWED_FORMAT_CHARACTERS for ch in name):
        return "device name contains control, format or unassigned characters"
    if not unicodedata.is_normalized("NFC", name):
        return "device name is not in Unicode normal form C"
    return None


def _addr_problem(addr: object) -> str | None:
    if (
        type(addr) is not str
        or not addr.startswith("/")
        or len(addr) > MAX_ADDR_LENGTH
        or not _PRINTABLE_ASCII.issuperset(addr)
    ):
        limit = MAX_ADDR_LENGTH
        return f"not a multiaddr (printable ASCII starting with /, at most {limit}): {str(addr)[:40]!r}"
    return None


def _key_problem(key: object, what: str) -> str | None:
    if type(key) is not bytes:
        return f"{what} is not bytes"
    try:
        PublicIdentity.from_bytes(key)
    except DecodeError as exc:
        return f"{what}: {exc.problem}"
    return None


def _u64_problem(value: object, what: str, *, low: int = 0) -> str | None:
    if type(value) is not int or not low <= value <= _U64_MAX:
        return f"{what} must be an integer from {low} to 2**64-1"
    return None


def _text_bytes(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


class _Reader:
    """Reads the fixed layout; every shortfall or overlong length is a ``DecodeError`` naming ``what``."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = data, 0, what

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise DecodeError(self._what, "truncated")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def text(self, max_bytes: int, field: str) -> str:
        (size,) = struct.unpack(">H", self.take(2))
        if size > max_bytes:
            raise DecodeError(self._what, f"{field} is {size} bytes; the limit is {max_bytes}")
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(self._what, f"{field} is not UTF-8") from exc

    def rest(self) -> int:
        return len(self._data) - self._pos


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """One device of a person, as the root certified it. Raises ValueError if a field is out of rules."""

    #: The device's Ed25519 public key (32 bytes): its PeerId, inbox tag and sessions derive from it.
    key: bytes
    #: What the person called it ("Anna's laptop"): shown to contacts, chosen by the person, unverified.
    name: str
    #: When the root added it, unix seconds.
    added: int

    def __post_init__(self) -> None:
        problem = (
            _key_problem(self.key, "device key")
            or _name_problem(self.name)
            or _u64_problem(self.added, "time added")
        )
        if problem:
            raise ValueError(problem)

    @property
    def public(self) -> PublicIdentity:
        """The device key as a ``PublicIdentity`` (to seal to it, verify it, name its PeerId)."""
        return PublicIdentity.from_bytes(self.key)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceList:
    """A person's devices, signed by their root key. One that exists is well formed and verified:
    the constructor raises ValueError for a field out of rules and ``BadSignature`` for a signature
    that is not the root's over the other fields."""

    #: The person's root Ed25519 public key (32 bytes), the one their safety number is made from.
    root: bytes
    #: Strictly increasing per change (u64, from 1); a lower or equal version never replaces a list.
    version: int
    #: 1 to ``MAX_DEVICES`` devices, keys unique, the root's own first.
    devices: tuple[Device, ...]
    #: Ed25519 by the root over ``meshchat/devices/v1\\0`` and the encoding of the other fields.
    signature: bytes

    def __post_init__(self) -> None:
        problem = _key_problem(self.root, "root key") or _u64_problem(self.version, "version", low=1)
        if problem is None:
            problem = _devices_problem(self.root, self.devices)
        if problem is None and (type(self.signature) is not bytes or len(self.signature) != SIGNATURE_SIZE):
            problem = f"signature must be {SIGNATURE_SIZE} bytes"
        if problem:
            raise ValueError(problem)
        PublicIdentity.from_bytes(self.root).verify(
            _LIST_DOMAIN + _list_bytes(self.root, self.version, self.devices),
            self.signature,
            what="device list",
        )

    @classmethod
    def first(cls, root: Identity, *, name: str, wall_now: float) -> DeviceList:
        """The list of a person who has only their primary device (version 1): the root key itself."""
        device = Device(key=root.public.ed25519, name=unicodedata.normalize("NFC", name), added=int(wall_now))
        return cls._signed(root, 1, (device,))

    def with_device(self, root: Identity, device: Device) -> DeviceList:
        """This list plus ``device``, signed as ``version + 1``. ValueError if ``root`` is not this list's
        root, the key is already listed, or the list is full."""
        self._check_root(root)
        if device.key in self.keys():
            raise ValueError("this device key is already in the list")
        if len(self.devices) >= MAX_DEVICES:
            raise ValueError(f"a person has at most {MAX_DEVICES} devices; remove one first")
        return self._signed(root, self._next_version(), (*self.devices, device))

    def without_device(self, root: Identity, key: bytes) -> DeviceList:
        """This list minus the device ``key``, signed as ``version + 1``. ValueError if ``root`` is not
        this list's root, ``key`` is the root (a new root is a new identity), or ``key`` is not listed."""
        self._check_root(root)
        if key == self.root:
            raise ValueError("the root device cannot be removed: it is the person's identity")
        if key not in self.keys():
            raise ValueError("no device with this key in the list")
        return self._signed(root, self._next_version(), tuple(d for d in self.devices if d.key != key))

    def encode(self) -> bytes:
        """The list's bytes (at most ``MAX_DEVICE_LIST_SIZE``), signature last."""
        return _list_bytes(self.root, self.version, self.devices) + self.signature

    @classmethod
    def decode(cls, data: bytes) -> DeviceList:
        """Parse and verify a list. ``TooLarge`` or ``DecodeError`` for malformed bytes (checked before
        the signature), ``UnsupportedVersion`` for another format, ``BadSignature`` if the root did not
        sign it."""
        what = "device list"
        if type(data) is not bytes:
            raise DecodeError(what, "not bytes")
        if len(data) > MAX_DEVICE_LIST_SIZE:
            raise TooLarge(what=what, size=len(data), limit=MAX_DEVICE_LIST_SIZE)
        reader = _Reader(data, what)
        version_byte = reader.u8()
        if version_byte != DEVICE_LIST_VERSION:
            raise UnsupportedVersion(what=what, version=version_byte, supported=(DEVICE_LIST_VERSION,))
        root, version, count = reader.take(PUBLIC_KEY_SIZE), reader.u64(), reader.u8()
        if not 1 <= count <= MAX_DEVICES:
            raise DecodeError(what, f"{count} devices; a list has 1 to {MAX_DEVICES}")
        raw_devices = []
        for _ in range(count):
            key, added = reader.take(PUBLIC_KEY_SIZE), reader.u64()
            raw_devices.append((key, added, reader.text(_MAX_NAME_BYTES, "device name")))
        signature = reader.take(SIGNATURE_SIZE)
        if reader.rest():
            raise DecodeError(what, "trailing bytes after the signature")
        try:
            devices = tuple(Device(key=k, name=n, added=a) for k, a, n in raw_devices)
            return cls(root=root, version=version, devices=devices, signature=signature)
        except ValueError as exc:  # a field out of rules (BadSignature is not a ValueError: it passes)
            raise DecodeError(what, str(exc)) from exc

    def replaces(self, older: DeviceList | None) -> bool:
        """True if a receiver holding ``older`` should keep this list instead: none held yet, or the same
        root with a lower version. (Whether the root is the contact's, the caller checks first.)"""
        return older is None or (older.root == self.root and self.version > older.version)

    def diff(self, older: DeviceList) -> tuple[tuple[Device, ...], tuple[Device, ...]]:
        """``(added, removed)`` going from ``older`` to this list, by key, each in list order.
        ValueError if the two lists belong to different roots."""
        if older.root != self.root:
            raise ValueError("these device lists belong to different people")
        old_keys, new_keys = older.keys(), self.keys()
        added = tuple(d for d in self.devices if d.key not in old_keys)
        removed = tuple(d for d in older.devices if d.key not in new_keys)
        return added, removed

    def keys(self) -> frozenset[bytes]:
        """Every device key in the list, root included."""
        return frozenset(d.key for d in self.devices)

    def _check_root(self, root: Identity) -> None:
        if root.public.ed25519 != self.root:
            raise ValueError("only the person's root key signs their device list; this is another key")

    def _next_version(self) -> int:
        if self.version >= _U64_MAX:
            raise ValueError("the device list version is exhausted")
        return self.version + 1

    @classmethod
    def _signed(cls, root: Identity, version: int, devices: tuple[Device, ...]) -> DeviceList:
        problem = _devices_problem(root.public.ed25519, devices)
        if problem:
            raise ValueError(problem)
        signature = root.sign(_LIST_DOMAIN + _list_bytes(root.public.ed25519, version, devices))
        return cls(root=root.public.ed25519, version=version, devices=devices, signature=signature)


def _list_bytes(root: bytes, version: int, devices: tuple[Device, ...]) -> bytes:
    """The list's encoding without its signature: what the root signs (after the domain string)."""
    parts = [bytes([DEVICE_LIST_VERSION]), root, struct.pack(">QB", version, len(devices))]
    for device in devices:
        parts += (device.key, struct.pack(">Q", device.added), _text_bytes(device.name))
    return b"".join(parts)


def _devices_problem(root: bytes, devices: object) -> str | None:
    if type(devices) is not tuple or not all(type(d) is Device for d in devices):
        return "devices must be a tuple of Device"
    if not 1 <= len(devices) <= MAX_DEVICES:
        return f"{len(devices)} devices; a list has 1 to {MAX_DEVICES}"
    if devices[0].key != root:
        return "the root key must be the first device"
    if len({d.key for d in devices}) != len(devices):
        return "a device key appears twice"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkRequest:
    """What a new device shows so the person's primary can add it. One that exists is well formed and
    signed by ``device`` (ValueError / ``BadSignature`` from the constructor otherwise)."""

    #: The new device's Ed25519 public key (32 bytes).
    device: bytes
    #: The name the person gave the new device (device-name rules).
    name: str
    #: Where the primary can dial the new device (multiaddrs, at most ``MAX_ADDRS``).
    addrs: tuple[str, ...]
    #: ``LINK_NONCE_SIZE`` random bytes.
    nonce: bytes
    #: When it was made, unix seconds; refused ``LINK_REQUEST_TTL`` seconds later.
    created: int
    #: Ed25519 by the device key over ``meshchat/link/v1\\0`` and the other fields: it holds the key.
    signature: bytes

    def __post_init__(self) -> None:
        problem = _key_problem(self.device, "device key") or _name_problem(self.name)
        if problem is None:
            problem = _addrs_problem(self.addrs)
        if problem is None and (type(self.nonce) is not bytes or len(self.nonce) != LINK_NONCE_SIZE):
            problem = f"nonce must be {LINK_NONCE_SIZE} bytes"
        problem = problem or _u64_problem(self.created, "creation time")
        if problem is None and (type(self.signature) is not bytes or len(self.signature) != SIGNATURE_SIZE):
            problem = f"signature must be {SIGNATURE_SIZE} bytes"
        if problem:
            raise ValueError(problem)
        PublicIdentity.from_bytes(self.device).verify(
            _LINK_DOMAIN + self._unsigned(), self.signature, what="link request"
        )

    @classmethod
    def create(
        cls,
        device: Identity,
        *,
        name: str,
        addrs: Sequence[str],
        wall_now: float,
        random_bytes: RandomBytes,
    ) -> LinkRequest:
        """Sign a request for the new device key ``device``. ValueError for a name or address out of
        rules, or a request too long for one QR code."""
        key, name, checked_addrs = device.public.ed25519, unicodedata.normalize("NFC", name), tuple(addrs)
        nonce, created = random_bytes(LINK_NONCE_SIZE), int(wall_now)
        problem = _name_problem(name) or _addrs_problem(checked_addrs)
        if problem:
            raise ValueError(problem)
        signature = device.sign(_LINK_DOMAIN + _request_bytes(key, nonce, created, name, checked_addrs))
        request = cls(
            device=key, name=name, addrs=checked_addrs, nonce=nonce, created=created, signature=signature
        )
        size = len(request.to_text())
        if size > MAX_LINK_TEXT:
            raise ValueError(f"the link request would be {size:,} characters; the limit is {MAX_LINK_TEXT:,}")
        return request

    def to_text(self) -> str:
        """The text to show or paste: ``MESHCHAT-LINK:`` + base32."""
        return LINK_PREFIX + base64.b32encode(self._unsigned() + self.signature).decode("ascii").rstrip("=")

    @classmethod
    def from_text(cls, text: str, *, wall_now: float) -> LinkRequest:
        """Parse and verify a request. ``TooLarge``, ``DecodeError`` or ``UnsupportedVersion`` for
        malformed text; ``BadSignature`` if the device key did not sign it; ``Expired`` when it was made
        more than ``LINK_REQUEST_TTL`` seconds before ``wall_now``."""
        what = "link request"
        token = "".join(text.split())
        if len(token) > MAX_LINK_TEXT:
            raise TooLarge(what=what, size=len(token), limit=MAX_LINK_TEXT)
        if not token.upper().startswith(LINK_PREFIX):
            raise DecodeError(what, f"does not start with {LINK_PREFIX}")
        body = token[len(LINK_PREFIX) :].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(what, "not base32 text") from exc
        if base64.b32encode(raw).decode("ascii").rstrip("=") != body:
            # b32decode ignores the unused low bits of the last character; one request, one text.
            raise DecodeError(what, "not canonical base32 (the last character was altered)")
        reader = _Reader(raw, what)
        version = reader.u8()
        if version != LINK_REQUEST_VERSION:
            raise UnsupportedVersion(what=what, version=version, supported=(LINK_REQUEST_VERSION,))
        device, nonce, created = reader.take(PUBLIC_KEY_SIZE), reader.take(LINK_NONCE_SIZE), reader.u64()
        name = reader.text(_MAX_NAME_BYTES, "device name")
        count = reader.u8()
        if count > MAX_ADDRS:
            raise DecodeError(what, f"{count} addresses; the limit is {MAX_ADDRS}")
        addrs = tuple(reader.text(MAX_ADDR_LENGTH, "address") for _ in range(count))
        signature = reader.take(SIGNATURE_SIZE)
        if reader.rest():
            raise DecodeError(what, "trailing bytes after the signature")
        try:
            request = cls(
                device=device, name=name, addrs=addrs, nonce=nonce, created=created, signature=signature
            )
        except ValueError as exc:  # a field out of rules (BadSignature is not a ValueError: it passes)
            raise DecodeError(what, str(exc)) from exc
        if wall_now > created + LINK_REQUEST_TTL:
            raise Expired(expiry=created + LINK_REQUEST_TTL, now=wall_now)
        if created > wall_now + LINK_CLOCK_SKEW:
            raise DecodeError(what, f"made {created - int(wall_now)} s in the future; the clocks disagree")
        return request

    def code(self) -> str:
        """The six-digit code both screens show, from the request's bytes (scrypt, see the module notes)."""
        digest = hashlib.scrypt(
            self._unsigned() + self.signature,
            salt=_CODE_SALT,
            n=_CODE_SCRYPT_N,
            r=_CODE_SCRYPT_R,
            p=_CODE_SCRYPT_P,
            maxmem=_CODE_SCRYPT_MAXMEM,
            dklen=8,
        )
        return f"{int.from_bytes(digest, 'big') % 10**LINK_CODE_DIGITS:0{LINK_CODE_DIGITS}d}"

    def qr(self) -> segno.QRCode:
        """A QR code of :meth:`to_text`; ``.save("link.png")`` or ``.terminal()`` it."""
        return segno.make_qr(self.to_text(), error="m")

    def to_device(self, *, wall_now: float) -> Device:
        """The entry the primary adds for this request (``DeviceList.with_device``), added at ``wall_now``."""
        return Device(key=self.device, name=self.name, added=int(wall_now))

    def _unsigned(self) -> bytes:
        return _request_bytes(self.device, self.nonce, self.created, self.name, self.addrs)


def _request_bytes(device: bytes, nonce: bytes, created: int, name: str, addrs: tuple[str, ...]) -> bytes:
    """A request's encoding without its signature: what the device key signs (after the domain string)."""
    parts = [bytes([LINK_REQUEST_VERSION]), device, nonce, struct.pack(">Q", created), _text_bytes(name)]
    parts.append(bytes([len(addrs)]))
    parts += (_text_bytes(addr) for addr in addrs)
    return b"".join(parts)


def _addrs_problem(addrs: object) -> str | None:
    if type(addrs) is not tuple or len(addrs) > MAX_ADDRS:
        return f"addresses must be a tuple of at most {MAX_ADDRS} multiaddrs"
    for addr in addrs:
        problem = _addr_problem(addr)
        if problem:
            return problem
    return None
