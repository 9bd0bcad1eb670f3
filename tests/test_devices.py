"""Device lists and link requests: round trips, the version rule, bounds enforced on decode, tampering.

Out-of-rule lists and requests are forged here from the documented byte layout and signed with the real
key, so the tests show each bound is enforced when decoding (a ``DecodeError`` before the signature is
looked at), not only when creating:

    list:    1 || root (32) || version u64 || count u8 || count x (key 32 || added u64 || u16 len || name)
             || signature (64), signed by the root over b"meshchat/devices/v1\\0" || everything before it
    request: "MESHCHAT-LINK:" + base32(1 || key (32) || nonce (16) || created u64 || u16 len || name
             || count u8 || count x (u16 len || addr) || signature (64)), signed by the key over
             b"meshchat/link/v1\\0" || everything before the signature
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import unicodedata
from collections.abc import Sequence

import pytest
import segno
from conftest import MULTILINGUAL_SAMPLES, printable_text
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.errors import BadSignature, DecodeError, Expired, MeshchatError, TooLarge, UnsupportedVersion
from meshchat.identity import Identity
from meshchat.identity.devices import (
    LINK_CLOCK_SKEW,
    LINK_PREFIX,
    LINK_REQUEST_TTL,
    MAX_ADDR_LENGTH,
    MAX_ADDRS,
    MAX_DEVICE_LIST_SIZE,
    MAX_DEVICES,
    MAX_LINK_TEXT,
    MAX_NAME_LENGTH,
    Device,
    DeviceList,
    LinkRequest,
)

ROOT = Identity(bytes(range(32)))
OTHER_ROOT = Identity(bytes(range(32, 64)))
#: Device keys made once: Hypothesis draws from them instead of paying for a key per example.
DEVICE_KEYS = tuple(Identity(bytes([i + 1]) * 32) for i in range(MAX_DEVICES + 4))
NOW = 1_780_000_000.0
LIST_DOMAIN = b"meshchat/devices/v1\x00"
LINK_DOMAIN = b"meshchat/link/v1\x00"
ADDRS = ("/ip4/192.168.1.20/tcp/4001", "/ip6/::1/udp/4001/quic-v1")
#: A device name from the invite rules: 0 to 64 printable characters in NFC.
device_names = st.one_of(
    st.sampled_from(MULTILINGUAL_SAMPLES),
    printable_text.map(lambda s: unicodedata.normalize("NFC", s)).filter(lambda s: len(s) <= MAX_NAME_LENGTH),
)
times = st.integers(min_value=0, max_value=2**64 - 1)


def make_request(
    device: Identity = DEVICE_KEYS[0],
    *,
    name: str = "Anna's laptop",
    wall_now: float = NOW,
    addrs: Sequence[str] = ADDRS,
    nonce: int = 1,
) -> LinkRequest:
    return LinkRequest.create(
        device, name=name, addrs=addrs, wall_now=wall_now, random_bytes=lambda n: nonce.to_bytes(n, "big")
    )


def list_body(
    root: bytes, version: int, devices: Sequence[tuple[bytes, int, bytes]], *, count: int | None = None
) -> bytes:
    parts = [b"\x01", root, struct.pack(">QB", version, len(devices) if count is None else count)]
    for key, added, name in devices:
        parts += (key, struct.pack(">QH", added, len(name)), name)
    return b"".join(parts)


def forge_list(signer: Identity, body: bytes) -> bytes:
    return body + signer.sign(LIST_DOMAIN + body)


def entry(identity: Identity, name: str = "device", added: int = 1) -> tuple[bytes, int, bytes]:
    return (identity.public.ed25519, added, name.encode())


def request_body(
    device: bytes,
    *,
    name: bytes = b"laptop",
    addrs: Sequence[bytes] = (),
    created: int = int(NOW),
    nonce: bytes = b"\x07" * 16,
    count: int | None = None,
) -> bytes:
    parts = [b"\x01", device, nonce, struct.pack(">QH", created, len(name)), name]
    parts.append(bytes([len(addrs) if count is None else count]))
    for addr in addrs:
        parts += (struct.pack(">H", len(addr)), addr)
    return b"".join(parts)


def as_text(raw: bytes) -> str:
    return LINK_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")


def forge_request(signer: Identity, body: bytes) -> str:
    return as_text(body + signer.sign(LINK_DOMAIN + body))


def full_list(n: int) -> DeviceList:
    devices = DeviceList.first(ROOT, name="phone", wall_now=NOW)
    for identity in DEVICE_KEYS[: n - 1]:
        devices = devices.with_device(ROOT, Device(key=identity.public.ed25519, name="d", added=int(NOW)))
    return devices


# --- device lists -------------------------------------------------------------------------------------


def test_first_list_is_the_root_alone_at_version_1() -> None:
    devices = DeviceList.first(ROOT, name="Anna's phone", wall_now=NOW + 0.9)
    assert devices.version == 1
    assert devices.root == ROOT.public.ed25519
    assert devices.devices == (Device(key=ROOT.public.ed25519, name="Anna's phone", added=int(NOW)),)
    assert devices.keys() == frozenset({ROOT.public.ed25519})
    assert DeviceList.decode(devices.encode()) == devices


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.sampled_from(DEVICE_KEYS), unique=True, max_size=MAX_DEVICES - 1),
    names=st.lists(device_names, min_size=MAX_DEVICES, max_size=MAX_DEVICES),
    added=st.lists(times, min_size=MAX_DEVICES, max_size=MAX_DEVICES),
)
def test_any_list_round_trips(picks: list[Identity], names: list[str], added: list[int]) -> None:
    devices = DeviceList.first(ROOT, name=names[0], wall_now=added[0])
    for i, identity in enumerate(picks, start=1):
        devices = devices.with_device(
            ROOT, Device(key=identity.public.ed25519, name=names[i], added=added[i])
        )
    data = devices.encode()
    assert len(data) <= MAX_DEVICE_LIST_SIZE
    assert DeviceList.decode(data) == devices
    assert DeviceList.decode(data).encode() == data
    assert devices.version == 1 + len(picks)
    assert [d.key for d in devices.devices] == [ROOT.public.ed25519] + [p.public.ed25519 for p in picks]


def test_largest_list_fits_its_bound() -> None:
    devices = DeviceList.first(ROOT, name="🦊" * MAX_NAME_LENGTH, wall_now=NOW)
    for identity in DEVICE_KEYS[: MAX_DEVICES - 1]:
        devices = devices.with_device(
            ROOT, Device(key=identity.public.ed25519, name="🦊" * MAX_NAME_LENGTH, added=2**64 - 1)
        )
    assert len(devices.encode()) == MAX_DEVICE_LIST_SIZE
    assert DeviceList.decode(devices.encode()) == devices


def test_add_and_remove_sign_the_next_version_and_diff_names_the_change() -> None:
    one = DeviceList.first(ROOT, name="phone", wall_now=NOW)
    laptop = make_request().to_device(wall_now=NOW + 5)
    two = one.with_device(ROOT, laptop)
    assert two.version == 2
    assert two.devices == (one.devices[0], laptop)
    assert two.diff(one) == ((laptop,), ())
    three = two.without_device(ROOT, laptop.key)
    assert three.version == 3
    assert three.devices == one.devices
    assert three.diff(two) == ((), (laptop,))
    assert three.diff(one) == ((), ())
    assert three.keys() == frozenset({ROOT.public.ed25519})
    for devices in (two, three):
        assert DeviceList.decode(devices.encode()) == devices


def test_only_the_root_changes_the_list() -> None:
    laptop_key = DEVICE_KEYS[0]
    devices = DeviceList.first(ROOT, name="phone", wall_now=NOW).with_device(
        ROOT, Device(key=laptop_key.public.ed25519, name="laptop", added=1)
    )
    extra = Device(key=DEVICE_KEYS[1].public.ed25519, name="tablet", added=1)
    # A linked device holds a device key, not the root: it can neither add nor remove.
    with pytest.raises(ValueError, match="root"):
        devices.with_device(laptop_key, extra)
    with pytest.raises(ValueError, match="root"):
        devices.without_device(laptop_key, laptop_key.public.ed25519)
    with pytest.raises(ValueError, match="root"):
        devices.with_device(OTHER_ROOT, extra)


def test_caller_mistakes_raise_value_error() -> None:
    devices = DeviceList.first(ROOT, name="phone", wall_now=NOW)
    laptop = Device(key=DEVICE_KEYS[0].public.ed25519, name="laptop", added=1)
    with pytest.raises(ValueError, match="already"):
        devices.with_device(ROOT, laptop).with_device(ROOT, laptop)
    with pytest.raises(ValueError, match="already"):
        devices.with_device(ROOT, Device(key=ROOT.public.ed25519, name="again", added=1))
    with pytest.raises(ValueError, match="root device cannot be removed"):
        devices.without_device(ROOT, ROOT.public.ed25519)
    with pytest.raises(ValueError, match="no device"):
        devices.without_device(ROOT, laptop.key)
    full = full_list(MAX_DEVICES)
    assert len(full.devices) == MAX_DEVICES
    with pytest.raises(ValueError, match=f"at most {MAX_DEVICES}"):
        full.with_device(ROOT, Device(key=DEVICE_KEYS[-1].public.ed25519, name="one too many", added=1))


def test_device_fields_are_checked_when_made() -> None:
    good = DEVICE_KEYS[0].public.ed25519
    for bad in (
        {"key": b"\x00" * 32},  # a small-order point, no usable key
        {"key": good[:31]},
        {"name": "x" * (MAX_NAME_LENGTH + 1)},
        {"name": "evil\u202etxt.exe"},  # a bidi override reorders text around it
        {"name": "line\nbreak"},
        {"name": "e\u0301"},  # not NFC
        {"added": -1},
        {"added": 2**64},
        {"added": True},
    ):
        fields: dict[str, object] = {"key": good, "name": "ok", "added": 1} | bad
        with pytest.raises(ValueError):
            Device(**fields)  # type: ignore[arg-type]  # wrong types on purpose
    # Joiners that emoji and scripts need stay allowed, as in invites.
    name = "👩\u200d💻 ми\u200cлад"  # noqa: RUF001  # Cyrillic on purpose
    assert Device(key=good, name=name, added=0).name == name


def test_names_are_normalised_to_nfc_when_the_list_is_made() -> None:
    assert DeviceList.first(ROOT, name="e\u0301", wall_now=NOW).devices[0].name == "\u00e9"


def test_constructor_verifies_the_signature() -> None:
    devices = DeviceList.first(ROOT, name="phone", wall_now=NOW)
    with pytest.raises(BadSignature):
        dataclasses.replace(devices, version=5)
    with pytest.raises(BadSignature):
        dataclasses.replace(devices, signature=bytes(64))
    # Structure is checked before the signature, with ValueError (the caller built it wrong).
    for bad in (
        {"devices": list(devices.devices)},
        {"devices": ()},
        {"version": 0},
        {"signature": devices.signature[:63]},
        {"root": OTHER_ROOT.public.ed25519},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(devices, **bad)  # type: ignore[arg-type]  # wrong types on purpose


# --- the version rule ------------------------------------------------------------------------------


def test_replaces_only_a_lower_version_of_the_same_root() -> None:
    v1 = DeviceList.first(ROOT, name="phone", wall_now=NOW)
    v2 = v1.with_device(ROOT, Device(key=DEVICE_KEYS[0].public.ed25519, name="laptop", added=1))
    v3 = v2.without_device(ROOT, DEVICE_KEYS[0].public.ed25519)
    assert v1.replaces(None)
    assert v2.replaces(v1) and v3.replaces(v2) and v3.replaces(v1)
    # The removed laptop replays v2 (signed by the root while it was listed) to a contact holding v3.
    assert not v2.replaces(v3)
    assert not v1.replaces(v2)
    assert not v2.replaces(v2)
    # Same version, different contents (the root signed twice): the first one seen stays.
    fork = v1.with_device(ROOT, Device(key=DEVICE_KEYS[1].public.ed25519, name="tablet", added=1))
    assert fork.version == v2.version and not fork.replaces(v2) and not v2.replaces(fork)
    other = DeviceList.first(OTHER_ROOT, name="phone", wall_now=NOW)
    other = other.with_device(OTHER_ROOT, Device(key=DEVICE_KEYS[2].public.ed25519, name="x", added=1))
    assert not other.replaces(v1)
    with pytest.raises(ValueError, match="different people"):
        other.diff(v1)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.booleans(), min_size=1, max_size=12))
def test_every_change_replaces_every_earlier_list(steps: list[bool]) -> None:
    history = build_history(steps)
    for i, newer in enumerate(history):
        for j, older in enumerate(history):
            assert newer.replaces(older) == (i > j)


def build_history(steps: Sequence[bool]) -> list[DeviceList]:
    """Versions 1, 2, ...: each step adds a fresh device (True) or removes the oldest linked one."""
    history = [DeviceList.first(ROOT, name="phone", wall_now=NOW)]
    pool = list(DEVICE_KEYS[: MAX_DEVICES - 1])
    for add in steps:
        current = history[-1]
        linked = [d.key for d in current.devices[1:]]
        if add or not linked:
            identity = pool.pop()
            history.append(current.with_device(ROOT, Device(key=identity.public.ed25519, name="d", added=1)))
        else:
            history.append(current.without_device(ROOT, linked[0]))
    return history


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.booleans(), min_size=1, max_size=10),
    data=st.data(),
)
def test_a_contact_ends_on_the_newest_list_whatever_the_delivery_order(
    steps: list[bool], data: st.DataObject
) -> None:
    """Lists arrive late, twice, out of order, and replayed by devices removed since: a contact that
    keeps a list only when it ``replaces`` the one held always holds the highest version delivered,
    and so never again a list naming a device removed in a version it has seen."""
    history = build_history(steps)
    wire = [h.encode() for h in history]
    deliveries = data.draw(st.lists(st.integers(0, len(history) - 1), min_size=1, max_size=3 * len(history)))
    held: DeviceList | None = None
    seen: list[int] = []
    for index in deliveries:
        arrived = DeviceList.decode(wire[index])
        if arrived.replaces(held):
            held = arrived
        seen.append(arrived.version)
        assert held is not None and held.version == max(seen)
        # Every device removed by a version seen is absent from the list held (keys never come back here).
        removed = {d.key for v in seen if v >= 2 for d in history[v - 1].diff(history[v - 2])[1]}
        assert not removed & held.keys()
    assert held == history[max(deliveries)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=MAX_DEVICE_LIST_SIZE + 10))
def test_garbage_lists_raise_decode_error_only(data: bytes) -> None:
    with pytest.raises(DecodeError):
        DeviceList.decode(data)


@settings(max_examples=100, deadline=None)
@given(prefix=st.sampled_from([b"\x01", b"\x01" + ROOT.public.ed25519]), tail=st.binary(max_size=400))
def test_garbage_after_a_plausible_header_raises_decode_error_only(prefix: bytes, tail: bytes) -> None:
    with pytest.raises(DecodeError):
        DeviceList.decode(prefix + tail)


def test_every_changed_byte_of_a_list_is_refused() -> None:
    devices = full_list(3)
    data = devices.encode()
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            tampered = data[:i] + bytes([data[i] ^ flip]) + data[i + 1 :]
            with pytest.raises((DecodeError, BadSignature)):
                DeviceList.decode(tampered)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            DeviceList.decode(data[:cut])
    with pytest.raises(DecodeError, match="trailing"):
        DeviceList.decode(data + b"\x00")


def test_a_list_signed_by_another_key_is_refused() -> None:
    body = list_body(ROOT.public.ed25519, 7, [entry(ROOT)])
    for signer in (OTHER_ROOT, DEVICE_KEYS[0]):  # another person, or one of ROOT's own linked devices
        with pytest.raises(BadSignature):
            DeviceList.decode(forge_list(signer, body))
    assert DeviceList.decode(forge_list(ROOT, body)).version == 7
    # Bytes signed without the domain string (e.g. as some other signed object) do not pass either.
    with pytest.raises(BadSignature):
        DeviceList.decode(body + ROOT.sign(body))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            list_body(ROOT.public.ed25519, 1, [entry(ROOT)] + [entry(k) for k in DEVICE_KEYS[:MAX_DEVICES]]),
            "devices",
        ),
        (list_body(ROOT.public.ed25519, 1, []), "devices"),
        (list_body(ROOT.public.ed25519, 0, [entry(ROOT)]), "version"),
        (list_body(ROOT.public.ed25519, 1, [entry(DEVICE_KEYS[0])]), "root key must be the first"),
        (
            list_body(ROOT.public.ed25519, 1, [entry(DEVICE_KEYS[0]), entry(ROOT)]),
            "root key must be the first",
        ),
        (
            list_body(ROOT.public.ed25519, 1, [entry(ROOT), entry(DEVICE_KEYS[0]), entry(DEVICE_KEYS[0])]),
            "twice",
        ),
        (list_body(ROOT.public.ed25519, 1, [entry(ROOT), entry(ROOT)]), "twice"),
        (list_body(ROOT.public.ed25519, 1, [entry(ROOT, "x" * (MAX_NAME_LENGTH + 1))]), "characters"),
        (list_body(ROOT.public.ed25519, 1, [entry(ROOT, "a\u202eb")]), "control, format"),
        (list_body(ROOT.public.ed25519, 1, [entry(ROOT, "e\u0301")]), "normal form"),
        (list_body(ROOT.public.ed25519, 1, [(ROOT.public.ed25519, 1, b"\xff\xfe")]), "UTF-8"),
        (
            list_body(ROOT.public.ed25519, 1, [(ROOT.public.ed25519, 1, b"\xed\xa0\x80")]),
            "UTF-8",
        ),  # surrogate
        (list_body(ROOT.public.ed25519, 1, [entry(ROOT), (b"\x00" * 32, 1, b"z")]), "device key"),
        (list_body(ROOT.public.ed25519, 1, [(ROOT.public.ed25519, 1, b"x" * 257)]), "257 bytes"),
    ],
    ids=lambda value: value if isinstance(value, str) else "list",
)
def test_out_of_rule_lists_signed_by_the_root_are_refused_on_decode(body: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        DeviceList.decode(forge_list(ROOT, body))


def test_list_format_version_and_size_are_checked_first() -> None:
    data = full_list(2).encode()
    with pytest.raises(UnsupportedVersion):
        DeviceList.decode(b"\x02" + data[1:])
    with pytest.raises(TooLarge):
        DeviceList.decode(b"\x01" * (MAX_DEVICE_LIST_SIZE + 1))
    with pytest.raises(DecodeError):
        DeviceList.decode(bytearray(data))  # type: ignore[arg-type]  # not bytes on purpose


def test_exhausted_version_cannot_be_increased() -> None:
    devices = DeviceList.decode(forge_list(ROOT, list_body(ROOT.public.ed25519, 2**64 - 1, [entry(ROOT)])))
    with pytest.raises(ValueError, match="exhausted"):
        devices.with_device(ROOT, Device(key=DEVICE_KEYS[0].public.ed25519, name="x", added=1))


# --- link requests -----------------------------------------------------------------------------------

multiaddrs = st.one_of(
    st.sampled_from(ADDRS),
    st.builds(lambda ip, port: f"/ip4/{ip}/tcp/{port}", st.ip_addresses(v=4), st.integers(0, 65535)),
)


@settings(max_examples=60, deadline=None)
@given(
    device=st.sampled_from(DEVICE_KEYS),
    name=device_names,
    addrs=st.lists(multiaddrs, max_size=MAX_ADDRS).map(tuple),
    created=st.integers(min_value=0, max_value=2**40),
    age=st.integers(min_value=-LINK_CLOCK_SKEW, max_value=LINK_REQUEST_TTL),
    nonce=st.binary(min_size=16, max_size=16),
)
def test_any_request_round_trips_through_text(
    device: Identity, name: str, addrs: tuple[str, ...], created: int, age: int, nonce: bytes
) -> None:
    request = LinkRequest.create(
        device, name=name, addrs=addrs, wall_now=created, random_bytes=lambda n: nonce
    )
    text = request.to_text()
    assert text.startswith(LINK_PREFIX) and len(text) <= MAX_LINK_TEXT
    parsed = LinkRequest.from_text(text, wall_now=created + age)
    assert parsed == request
    assert parsed.to_text() == text
    # Retyped in lower case, or wrapped over lines, it is the same request.
    spaced = "\n".join(text.lower()[i : i + 40] for i in range(0, len(text), 40))
    assert LinkRequest.from_text(spaced, wall_now=created + age) == request


def test_request_fields_and_device_entry() -> None:
    request = make_request(name="e\u0301 laptop")
    assert request.device == DEVICE_KEYS[0].public.ed25519
    assert request.name == "\u00e9 laptop"  # NFC
    assert request.addrs == ADDRS
    assert request.created == int(NOW)
    assert request.nonce == (1).to_bytes(16, "big")
    device = request.to_device(wall_now=NOW + 30)
    assert device == Device(key=request.device, name=request.name, added=int(NOW) + 30)
    assert device.public == DEVICE_KEYS[0].public


def test_request_expires_after_its_ttl_and_refuses_a_far_future_time() -> None:
    text = make_request().to_text()
    assert LinkRequest.from_text(text, wall_now=NOW + LINK_REQUEST_TTL).created == int(NOW)
    with pytest.raises(Expired) as raised:
        LinkRequest.from_text(text, wall_now=NOW + LINK_REQUEST_TTL + 1)
    assert raised.value.expiry == int(NOW) + LINK_REQUEST_TTL
    assert LinkRequest.from_text(text, wall_now=NOW - LINK_CLOCK_SKEW).created == int(NOW)
    with pytest.raises(DecodeError, match="future"):
        LinkRequest.from_text(text, wall_now=NOW - LINK_CLOCK_SKEW - 1)


def test_every_changed_character_of_a_request_is_refused() -> None:
    text = make_request().to_text()
    body_start = len(LINK_PREFIX)
    for i in range(body_start, len(text)):
        for other in {"A", "7"} - {text[i]}:
            with pytest.raises((DecodeError, BadSignature)):
                LinkRequest.from_text(text[:i] + other + text[i + 1 :], wall_now=NOW)
    for cut in range(body_start, len(text)):
        with pytest.raises(DecodeError):
            LinkRequest.from_text(text[:cut], wall_now=NOW)


def test_a_tampered_field_breaks_the_signature() -> None:
    device = DEVICE_KEYS[0]
    body = request_body(device.public.ed25519, name=b"laptop", addrs=[b"/ip4/127.0.0.1/tcp/1"])
    signature = device.sign(LINK_DOMAIN + body)
    assert LinkRequest.from_text(as_text(body + signature), wall_now=NOW).name == "laptop"
    for changed in (
        request_body(device.public.ed25519, name=b"laptoq", addrs=[b"/ip4/127.0.0.1/tcp/1"]),
        request_body(device.public.ed25519, name=b"laptop", addrs=[b"/ip4/10.6.6.6/tcp/1"]),
        request_body(
            device.public.ed25519, name=b"laptop", addrs=[b"/ip4/127.0.0.1/tcp/1"], created=int(NOW) + 1
        ),
        request_body(
            device.public.ed25519, name=b"laptop", addrs=[b"/ip4/127.0.0.1/tcp/1"], nonce=b"\x08" * 16
        ),
        request_body(DEVICE_KEYS[1].public.ed25519, name=b"laptop", addrs=[b"/ip4/127.0.0.1/tcp/1"]),
    ):
        with pytest.raises(BadSignature):
            LinkRequest.from_text(as_text(changed + signature), wall_now=NOW)


def test_a_request_signed_by_another_key_is_refused() -> None:
    # An attacker names the victim's key but cannot sign for it: the request proves key possession.
    body = request_body(DEVICE_KEYS[0].public.ed25519)
    for signer in (DEVICE_KEYS[1], ROOT):
        with pytest.raises(BadSignature):
            LinkRequest.from_text(forge_request(signer, body), wall_now=NOW)
    assert LinkRequest.from_text(forge_request(DEVICE_KEYS[0], body), wall_now=NOW).name == "laptop"
    with pytest.raises(BadSignature):
        dataclasses.replace(make_request(), name="renamed")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (request_body(DEVICE_KEYS[0].public.ed25519, name=b"x" * (MAX_NAME_LENGTH + 1)), "characters"),
        (request_body(DEVICE_KEYS[0].public.ed25519, name="a\u2066b".encode()), "control, format"),
        (request_body(DEVICE_KEYS[0].public.ed25519, name=b"\xc3"), "UTF-8"),
        (request_body(DEVICE_KEYS[0].public.ed25519, addrs=[b"/a"] * (MAX_ADDRS + 1)), "addresses"),
        (request_body(DEVICE_KEYS[0].public.ed25519, addrs=[b"ip4/1.2.3.4"]), "multiaddr"),
        (request_body(DEVICE_KEYS[0].public.ed25519, addrs=[b"/ip4/1.2.3.4 x"]), "multiaddr"),
        (request_body(DEVICE_KEYS[0].public.ed25519, addrs=["/ip4/ü".encode()]), "multiaddr"),
        (request_body(DEVICE_KEYS[0].public.ed25519, addrs=[b"/" * (MAX_ADDR_LENGTH + 1)]), "257 bytes"),
        (
            request_body(DEVICE_KEYS[0].public.ed25519, addrs=[b"/a"], count=2),
            "address is",
        ),  # reads the signature as one
    ],
    ids=lambda value: value if isinstance(value, str) else "request",
)
def test_out_of_rule_requests_signed_by_their_key_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        LinkRequest.from_text(forge_request(DEVICE_KEYS[0], body), wall_now=NOW)


def test_request_text_bounds() -> None:
    with pytest.raises(TooLarge):
        LinkRequest.from_text(LINK_PREFIX + "A" * MAX_LINK_TEXT, wall_now=NOW)
    for text in ("MESHCHAT:AAAA", LINK_PREFIX, LINK_PREFIX + "!!!!", LINK_PREFIX + "A"):
        with pytest.raises(DecodeError):
            LinkRequest.from_text(text, wall_now=NOW)
    body = make_request().to_text()[len(LINK_PREFIX) :]
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    with pytest.raises(UnsupportedVersion):
        LinkRequest.from_text(as_text(b"\x02" + raw[1:]), wall_now=NOW)
    # Eight addresses of the longest length do not fit one QR code: refused when made, not when shown.
    with pytest.raises(ValueError, match="characters"):
        make_request(addrs=["/" + "a" * (MAX_ADDR_LENGTH - 1)] * MAX_ADDRS)
    for addrs in (["/a"] * (MAX_ADDRS + 1), ["no-slash"], ["/tab\t"]):
        with pytest.raises(ValueError):
            make_request(addrs=addrs)
    with pytest.raises(ValueError):
        make_request(name="x" * (MAX_NAME_LENGTH + 1))


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", max_size=400).map(lambda s: LINK_PREFIX + s),
    )
)
def test_garbage_request_text_raises_decode_error_only(text: str) -> None:
    with pytest.raises(DecodeError):
        LinkRequest.from_text(text, wall_now=NOW)


def test_comparison_code_matches_on_both_screens_and_differs_for_another_request() -> None:
    request = make_request()
    shown_on_new_device = request.code()
    received = LinkRequest.from_text(request.to_text().lower(), wall_now=NOW + 60)
    assert received.code() == shown_on_new_device
    assert len(shown_on_new_device) == 6 and shown_on_new_device.isdigit()
    # A request swapped on its way (another key, or the same key with another nonce) shows another code.
    assert make_request(DEVICE_KEYS[1]).code() != shown_on_new_device
    assert make_request(nonce=2).code() != shown_on_new_device


def test_qr_code_holds_the_request_text() -> None:
    request = make_request()
    qr = request.qr()
    assert isinstance(qr, segno.QRCode)
    assert qr.mode == "alphanumeric"
    assert qr.error == "M"
    # Exactly the request text is encoded: segno picks the smallest version that holds that many characters.
    assert qr.version == segno.make_qr(request.to_text(), error="m").version


def test_errors_are_all_meshchat_errors() -> None:
    for exc in (DecodeError, BadSignature, Expired, TooLarge, UnsupportedVersion):
        assert issubclass(exc, MeshchatError)


def test_link_flow_end_to_end() -> None:
    """The new device shows a request; the primary checks the code, adds it, and everyone updates."""
    primary_list = DeviceList.first(ROOT, name="phone", wall_now=NOW)
    contact_holds = DeviceList.decode(primary_list.encode())
    laptop = DEVICE_KEYS[0]
    shown = make_request(laptop, name="laptop", wall_now=NOW)
    received = LinkRequest.from_text(shown.to_text(), wall_now=NOW + 45)
    assert received.code() == shown.code()
    new_list = primary_list.with_device(ROOT, received.to_device(wall_now=NOW + 45))
    # The new device and the contact receive the bytes and check them.
    on_laptop = DeviceList.decode(new_list.encode())
    assert on_laptop.keys() == {ROOT.public.ed25519, laptop.public.ed25519}
    assert on_laptop.root == ROOT.public.ed25519
    update = DeviceList.decode(new_list.encode())
    assert update.replaces(contact_holds)
    added, removed = update.diff(contact_holds)
    assert [d.name for d in added] == ["laptop"] and removed == ()
    # Later the laptop is lost and removed; its replay of the list that still names it changes nothing.
    after_loss = update.without_device(ROOT, laptop.public.ed25519)
    assert after_loss.replaces(update)
    assert not DeviceList.decode(on_laptop.encode()).replaces(after_loss)
