"""Invites: round trips in any script, tamper detection, limits enforced on decode, QR codes.

Tokens with out-of-limit contents are forged here from the documented layout (``MESHCHAT:`` + base32 of
``version || msgpack {1: key, 2: name, 3: addrs, 4: signature}``, the signature over a domain string,
the version and fields 1-3) and signed with a real key, so the tests show the limits are enforced when
decoding, not only when creating.
"""

from __future__ import annotations

import base64
import dataclasses
import unicodedata
from pathlib import Path

import msgpack
import pytest
import segno
from conftest import MULTILINGUAL_SAMPLES, printable_text, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.errors import BadInvite, BadSignature, DecodeError, MeshchatError, UnsupportedVersion
from meshchat.identity import Identity
from meshchat.wire.invite import (
    INVITE_PREFIX,
    MAX_ADDR_LENGTH,
    MAX_ADDRS,
    MAX_INVITE_TEXT,
    MAX_NAME_LENGTH,
    Invite,
)

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
REJECTIONS = (BadInvite, BadSignature, UnsupportedVersion, DecodeError)
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SIGNING_DOMAIN = b"meshchat/invite/v1\x00"

REAL_ADDRS = (
    "/ip4/127.0.0.1/tcp/4001",
    "/ip4/192.168.1.20/udp/4001/quic-v1",
    "/ip6/::1/tcp/4001",
    "/dns4/relay.example.org/tcp/443/wss",
)

multiaddrs = st.one_of(
    st.sampled_from(REAL_ADDRS),
    st.builds(lambda ip, port: f"/ip4/{ip}/tcp/{port}", st.ip_addresses(v=4), st.integers(0, 65535)),
    st.builds(lambda ip, port: f"/ip6/{ip}/udp/{port}/quic-v1", st.ip_addresses(v=6), st.integers(0, 65535)),
)
addr_lists = st.lists(multiaddrs, max_size=MAX_ADDRS).map(tuple)


def forge(
    identity: Identity,
    *,
    name: object = "",
    addrs: object = (),
    key: object = None,
    signature: object = None,
    version: int = 1,
    extra: dict[int, object] | None = None,
) -> str:
    """A token with these exact fields, signed by ``identity`` unless a signature is given."""
    key = identity.public.ed25519 if key is None else key
    signed = {1: key, 2: name, 3: addrs}
    if signature is None:
        signature = identity.sign(
            SIGNING_DOMAIN + bytes([version]) + msgpack.packb(signed, use_bin_type=True)
        )
    fields = {**signed, 4: signature, **(extra or {})}
    raw = bytes([version]) + msgpack.packb(fields, use_bin_type=True)
    return INVITE_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")


def raw_of(token: str) -> bytes:
    body = token[len(INVITE_PREFIX) :]
    return base64.b32decode(body + "=" * (-len(body) % 8))


def fields_of(token: str) -> dict[int, object]:
    fields = msgpack.unpackb(raw_of(token)[1:], strict_map_key=False, use_list=False)
    assert isinstance(fields, dict)
    return fields


def token_of(fields: dict[int, object], version: int = 1) -> str:
    raw = bytes([version]) + msgpack.packb(fields, use_bin_type=True)
    return INVITE_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")


FIXED = Invite.create(ALICE, name="Рәхим итегез", addrs=REAL_ADDRS[:2])
FIXED_TEXT = FIXED.to_text()


def test_forge_matches_the_library() -> None:
    # The forger is right about the layout, so what it makes is refused for its contents alone.
    assert forge(ALICE, name="Рәхим итегез", addrs=REAL_ADDRS[:2]) == FIXED_TEXT
    assert Invite.from_text(forge(BOB, name="Bob")) == Invite.create(BOB, name="Bob")


# --- round trips ---------------------------------------------------------------------------------


@settings(max_examples=150)
@given(seed=seeds, name=printable_text, addrs=addr_lists)
def test_round_trip(seed: bytes, name: str, addrs: tuple[str, ...]) -> None:
    identity = Identity(seed)
    nfc = unicodedata.normalize("NFC", name)
    if len(nfc) > MAX_NAME_LENGTH:  # NFC can lengthen a few characters (e.g. U+0344 -> 2)
        with pytest.raises(BadInvite):
            Invite.create(identity, name=name, addrs=addrs)
        return
    invite = Invite.create(identity, name=name, addrs=addrs)
    text = invite.to_text()
    parsed = Invite.from_text(text)
    assert parsed == invite
    assert parsed.public == identity.public
    assert parsed.name == nfc
    assert parsed.addrs == addrs
    assert parsed.to_text() == text


@pytest.mark.parametrize(
    "name",
    [
        *MULTILINGUAL_SAMPLES,
        "Алексей Иванов",
        "Рәхим итегез",  # Tatar
        "Башҡортостан",  # Bashkir
        "Нохчийчоь",  # Chechen
        "Саха Өрөспүүбүлүкэтэ",  # noqa: RUF001  # Yakut: Cyrillic letters are the point
        "Ӟечбуръёсь",  # Udmurt
        "🦊",
        "🇷🇺 🇹🇭",
        "❤️ Zoë",  # with a variation selector (a mark, not a format character)
        "x" * MAX_NAME_LENGTH,
        "Ж" * MAX_NAME_LENGTH,
        "🔥" * MAX_NAME_LENGTH,
    ],
)
def test_round_trip_named(name: str) -> None:
    invite = Invite.create(ALICE, name=name, addrs=REAL_ADDRS)
    parsed = Invite.from_text(invite.to_text())
    assert parsed == invite
    assert parsed.name == name


def test_names_with_zero_width_joiners_round_trip() -> None:
    """Emoji ZWJ sequences and Persian/Indic names need U+200D/U+200C, which are Unicode "Cf".

    The invite refuses every "C*" character as "control or unassigned", but these two are neither:
    they are part of how real names and common emoji are written.
    """
    refused = []
    for name in ["👩‍💻 Aigul", "🏳️‍🌈", "👨‍👩‍👧", "می‌خواهم", "क्‍ष"]:
        try:
            assert Invite.from_text(Invite.create(ALICE, name=name).to_text()).name == name
        except BadInvite:
            refused.append(name)
    assert not refused, f"real names refused: {refused!r}"


def test_create_normalises_the_name_to_nfc() -> None:
    invite = Invite.create(ALICE, name="Zoe\u0308")
    assert invite.name == "Zo\u00eb"
    assert Invite.from_text(invite.to_text()).name == "Zo\u00eb"


def test_addrs_may_be_any_sequence() -> None:
    invite = Invite.create(ALICE, addrs=list(REAL_ADDRS))
    assert invite.addrs == REAL_ADDRS
    assert Invite.from_text(invite.to_text()).addrs == REAL_ADDRS


def test_token_is_prefix_and_unpadded_upper_case_base32() -> None:
    assert FIXED_TEXT.startswith(INVITE_PREFIX)
    body = FIXED_TEXT[len(INVITE_PREFIX) :]
    assert set(body) <= set(BASE32)
    assert Invite.create(ALICE, name="Рәхим итегез", addrs=REAL_ADDRS[:2]).to_text() == FIXED_TEXT


def test_token_is_accepted_in_lower_case_and_with_whitespace() -> None:
    body = FIXED_TEXT[len(INVITE_PREFIX) :]
    chunked = "\n".join(body[i : i + 16] for i in range(0, len(body), 16))
    variants = [
        FIXED_TEXT.lower(),
        FIXED_TEXT.title(),
        f"  {FIXED_TEXT}\n",
        f"{INVITE_PREFIX}\n{chunked}\n",
        f"{INVITE_PREFIX} {' '.join(body[i : i + 4] for i in range(0, len(body), 4))}",
        "\t".join(FIXED_TEXT).lower(),
        FIXED_TEXT.replace("A", "a\r\n"),
    ]
    for text in variants:
        assert Invite.from_text(text) == FIXED


# --- tampering -----------------------------------------------------------------------------------


def test_every_single_character_substitution_is_rejected() -> None:
    prefix, body = INVITE_PREFIX, FIXED_TEXT[len(INVITE_PREFIX) :]
    outcomes: dict[str, int] = {}
    for i, original in enumerate(body):
        for replacement in BASE32.replace(original, ""):
            text = prefix + body[:i] + replacement + body[i + 1 :]
            try:
                parsed = Invite.from_text(text)
            except REJECTIONS as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                continue
            # Accepted only if it is the very same invite (the same bytes, decoded).
            assert raw_of(text) == raw_of(FIXED_TEXT), (i, replacement)
            assert parsed == FIXED
    assert sum(outcomes.values()) > 0.99 * len(body) * 31, outcomes


def test_truncations_are_rejected() -> None:
    for length in range(len(FIXED_TEXT)):
        with pytest.raises(REJECTIONS):
            Invite.from_text(FIXED_TEXT[:length])


def test_appended_characters_are_rejected() -> None:
    for suffix in [*BASE32, *BASE32.lower(), "=", "==", "0", "1", "8", "9", "AA", "A" * 8, "Ж"]:
        with pytest.raises(REJECTIONS):
            Invite.from_text(FIXED_TEXT + suffix)


def test_a_swapped_public_key_fails_the_signature() -> None:
    fields = fields_of(FIXED_TEXT)
    fields[1] = BOB.public.ed25519
    with pytest.raises(BadSignature):
        Invite.from_text(token_of(fields))


@pytest.mark.parametrize(
    ("field", "value"),
    [(2, "Рәхим итегез!"), (2, ""), (3, ()), (3, REAL_ADDRS[:1]), (3, REAL_ADDRS[1::-1])],
)
def test_changed_contents_fail_the_signature(field: int, value: object) -> None:
    fields = fields_of(FIXED_TEXT)
    fields[field] = value
    with pytest.raises(BadSignature):
        Invite.from_text(token_of(fields))


@st.composite
def _edited_tokens(draw: st.DrawFn) -> str:
    text = FIXED_TEXT
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        ch = draw(st.one_of(st.sampled_from(BASE32 + BASE32.lower() + "=: \n01"), st.characters()))
        edit = draw(st.sampled_from(["insert", "replace", "delete"]))
        if edit == "insert":
            text = text[:i] + ch + text[i:]
        elif edit == "replace":
            text = text[:i] + ch + text[i + 1 :]
        else:
            text = text[:i] + text[i + 1 :]
    return text


@settings(max_examples=300)
@given(
    text=st.one_of(
        st.text(),
        st.text(alphabet=BASE32 + BASE32.lower() + " \n\t=").map(lambda t: INVITE_PREFIX + t),
        _edited_tokens(),
    )
)
def test_any_text_is_an_invite_or_a_meshchat_error(text: str) -> None:
    try:
        parsed = Invite.from_text(text)
    except MeshchatError:
        return
    # Whatever the edits, only the genuine invite has a valid signature.
    assert parsed == FIXED


def test_overlong_text_is_rejected_before_decoding() -> None:
    with pytest.raises(BadInvite, match="longer than any invite"):
        Invite.from_text(INVITE_PREFIX + "A" * 10_000)


@pytest.mark.parametrize("text", ["", "MESHCHAT:", "MESHCHAT", "meshchat", "hello", "MESHCHAT:A", "🦊"])
def test_empty_and_short_texts_are_rejected(text: str) -> None:
    with pytest.raises(BadInvite):
        Invite.from_text(text)


# --- limits, on create and on decode -------------------------------------------------------------

BAD_NAMES = {
    "65 characters": "x" * (MAX_NAME_LENGTH + 1),
    "NUL": "a\x00b",
    "newline": "Bob\nAlice",
    "DEL": "Bob\x7f",
    "escape sequence": "\x1b[31mBob",
    "right-to-left override": "Bob\u202ekcilc",
    "private use": "Bob\ue000",
    "unassigned": "Bob\u0378",
}
BAD_ADDRS = {
    "nine addresses": tuple(REAL_ADDRS * 3)[: MAX_ADDRS + 1],
    "no leading slash": ("ip4/127.0.0.1/tcp/4001",),
    "empty": ("",),
    "too long": ("/" + "a" * MAX_ADDR_LENGTH,),
    "not text": (b"/ip4/127.0.0.1/tcp/4001",),
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_create_refuses_bad_names(name: str) -> None:
    with pytest.raises(BadInvite):
        Invite.create(ALICE, name=name)


@pytest.mark.parametrize("addrs", BAD_ADDRS.values(), ids=BAD_ADDRS.keys())
def test_create_refuses_bad_addrs(addrs: tuple[str, ...]) -> None:
    with pytest.raises(BadInvite):
        Invite.create(ALICE, addrs=addrs)


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_from_text_refuses_signed_bad_names(name: str) -> None:
    with pytest.raises(BadInvite):
        Invite.from_text(forge(ALICE, name=name))


@pytest.mark.parametrize("addrs", BAD_ADDRS.values(), ids=BAD_ADDRS.keys())
def test_from_text_refuses_signed_bad_addrs(addrs: tuple[object, ...]) -> None:
    with pytest.raises(BadInvite):
        Invite.from_text(forge(ALICE, addrs=addrs))


def test_the_limits_themselves_are_accepted_on_decode() -> None:
    # Each limit on its own: all of them at once would exceed the total size (a QR code's capacity).
    text = forge(ALICE, name="я" * MAX_NAME_LENGTH, addrs=("/" + "a" * (MAX_ADDR_LENGTH - 1),) * 4)
    parsed = Invite.from_text(text)
    assert len(parsed.name) == MAX_NAME_LENGTH
    assert parsed.addrs[0] == "/" + "a" * (MAX_ADDR_LENGTH - 1)
    assert (
        len(Invite.from_text(forge(ALICE, addrs=("/ip4/127.0.0.1/tcp/4001",) * MAX_ADDRS)).addrs) == MAX_ADDRS
    )


def test_the_total_size_is_capped_at_a_qr_codes_capacity() -> None:
    big = forge(ALICE, name="я" * MAX_NAME_LENGTH, addrs=("/" + "a" * (MAX_ADDR_LENGTH - 1),) * MAX_ADDRS)
    assert len(big) > MAX_INVITE_TEXT
    with pytest.raises(BadInvite, match="longer than any invite"):
        Invite.from_text(big)
    with pytest.raises(BadInvite, match="the limit is 3,391"):
        Invite.create(
            ALICE, name="я" * MAX_NAME_LENGTH, addrs=("/" + "a" * (MAX_ADDR_LENGTH - 1),) * MAX_ADDRS
        )


MALFORMED = {
    "name not text": {"name": b"Bob"},
    "addrs not an array": {"addrs": "/ip4/127.0.0.1/tcp/4001"},
    "addrs a map": {"addrs": {1: "/ip4/127.0.0.1/tcp/4001"}},
    "key too short": {"key": ALICE.public.ed25519[:31]},
    "key not bytes": {"key": ALICE.public.ed25519.hex()},
    "key a small-order point": {"key": bytes(32)},
    "signature not bytes": {"signature": "sig"},
    "extra field": {"extra": {5: 0}},
}


@pytest.mark.parametrize("changes", MALFORMED.values(), ids=MALFORMED.keys())
def test_from_text_refuses_malformed_fields(changes: dict[str, object]) -> None:
    with pytest.raises(BadInvite):
        Invite.from_text(forge(ALICE, **changes))  # type: ignore[arg-type]  # deliberately wrong types


def test_from_text_refuses_missing_fields() -> None:
    for missing in (1, 2, 3, 4):
        fields = fields_of(FIXED_TEXT)
        del fields[missing]
        with pytest.raises(BadInvite):
            Invite.from_text(token_of(fields))


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 64])
def test_from_text_refuses_bad_signatures(signature: bytes) -> None:
    with pytest.raises(BadSignature):
        Invite.from_text(forge(ALICE, name="Alice", signature=signature))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_versions(version: int) -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        Invite.from_text(forge(ALICE, name="Alice", version=version))
    assert caught.value.version == version


def test_non_canonical_msgpack_is_refused() -> None:
    raw = bytearray(raw_of(forge(ALICE, name="Alice")))
    # The name "Alice" as str8 (d9 05) instead of fixstr (a5): same value, second encoding.
    index = raw.index(b"\xa5Alice")
    raw[index : index + 1] = b"\xd9\x05"
    with pytest.raises(BadInvite):
        Invite.from_text(INVITE_PREFIX + base64.b32encode(bytes(raw)).decode().rstrip("="))
    with pytest.raises(BadInvite):
        Invite.from_text(INVITE_PREFIX + base64.b32encode(raw_of(FIXED_TEXT) + b"\x00").decode().rstrip("="))


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(st.characters(codec="utf-8", exclude_categories=("C",)), max_size=MAX_NAME_LENGTH),
    addrs=st.lists(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=MAX_ADDR_LENGTH - 1).map(
            lambda tail: "/" + tail
        ),
        max_size=MAX_ADDRS,
    ),
)
def test_every_invite_create_accepts_can_be_read_back_and_drawn(name: str, addrs: list[str]) -> None:
    """``create`` bounds the whole token, so everything it accepts parses back and fits one QR code."""
    try:
        invite = Invite.create(ALICE, name=name, addrs=addrs)
    except BadInvite as exc:
        assert "the limit is 3,391" in str(exc) or "normal form" in str(exc)
        return
    assert Invite.from_text(invite.to_text()) == invite
    assert isinstance(invite.qr(), segno.QRCode)


def test_non_ascii_addresses_are_refused() -> None:
    with pytest.raises(BadInvite, match="printable ASCII"):
        Invite.create(ALICE, addrs=("/dns/" + "я" * 20,))
    with pytest.raises(BadInvite, match="printable ASCII"):
        Invite.create(ALICE, addrs=("/ip4/127.0.0.1/tcp/4001\x1b[31m",))


# --- QR codes -------------------------------------------------------------------------------------


def test_qr_code_and_png(tmp_path: Path) -> None:
    qr = FIXED.qr()
    assert isinstance(qr, segno.QRCode)
    assert qr.mode == "alphanumeric"  # the upper-case base32 text fits the dense mode
    assert qr.error in {"M", "Q", "H"}
    path = tmp_path / "invite.png"
    qr.save(str(path), scale=4)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 100


def test_qr_code_of_an_invite_with_every_address() -> None:
    invite = Invite.create(ALICE, name="Рәхим итегез", addrs=tuple(REAL_ADDRS * 2))
    assert invite.qr().mode == "alphanumeric"


def test_qr_code_of_the_largest_ascii_invite() -> None:
    """A 64-character name and eight 256-character addresses make 3,601 characters: over a QR code's
    3,391, so ``create`` refuses it; one address fewer fits and draws."""
    addrs = ("/dns4/" + "a" * (MAX_ADDR_LENGTH - 6),) * MAX_ADDRS
    with pytest.raises(BadInvite, match="3,601 characters"):
        Invite.create(ALICE, name="x" * MAX_NAME_LENGTH, addrs=addrs)
    invite = Invite.create(ALICE, name="x" * MAX_NAME_LENGTH, addrs=addrs[:-1])
    assert isinstance(invite.qr(), segno.QRCode)


def test_an_invite_names_the_mailboxes_its_owner_syncs_from() -> None:
    owner = Identity(b"\x07" * 32)
    mailbox_peer = Identity(b"\x08" * 32).public.peer_id
    box = f"/ip4/192.0.2.1/tcp/4002/p2p/{mailbox_peer}"
    invite = Invite.create(owner, name="Bob", mailboxes=[box])
    again = Invite.from_text(invite.to_text())
    assert again.mailboxes == (box,) and again == invite
    plain = Invite.create(owner, name="Bob")
    assert Invite.from_text(plain.to_text()).mailboxes == ()
    body = plain.to_text().removeprefix("MESHCHAT:")
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    assert set(msgpack.unpackb(raw[1:], strict_map_key=False)) == {1, 2, 3, 4}  # as before field 5
    with pytest.raises(BadInvite, match="p2p"):
        Invite.create(owner, mailboxes=["/ip4/192.0.2.1/tcp/4002"])  # no PeerId: unusable
    tampered = dataclasses.replace(invite, mailboxes=(box.replace("4002", "4003"),))
    with pytest.raises(BadSignature):
        Invite.from_text(tampered.to_text())
