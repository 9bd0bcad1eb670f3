"""QR payloads of presentations: exact round trip, RFC 9285 base45 vectors, every malformed payload typed."""

from __future__ import annotations

import zlib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.credentials import (
    QR_PREFIX,
    Verifier,
    from_qr_text,
    holder_key,
    issue,
    predicates_for,
    present,
    present_one_way,
    qr_code,
    to_qr_text,
)
from meshchat.credentials.qr import MAX_INFLATED, b45decode, b45encode
from meshchat.errors import DecodeError, MeshchatError, TooLarge, UnsupportedVersion
from meshchat.identity import Identity
from meshchat.wire.codec import pack

NOW = 1_780_000_000.0
ISSUER = Identity(bytes([7]) * 32)
HOLDER = holder_key(bytes([9]) * 32, bytes(16))
AGE = issue(
    ISSUER,
    holder=HOLDER.public,
    vct="age",
    claims=predicates_for(date(2001, 4, 12), date(2026, 12, 5)),
    now=NOW,
    valid_for=365 * 86400,
)
ID = issue(
    ISSUER,
    holder=HOLDER.public,
    vct="id",
    claims={
        "given_name": "Alisa",
        "family_name": "Ivanova",
        "document_number": "4510 123456",
        "note": "é" * 50,
    },
    now=NOW,
)


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"), (b"ietf!", "QED8WEX0")],
)
def test_rfc9285_vectors(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text and b45decode(text) == raw


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=100))
def test_base45_round_trip(data: bytes) -> None:
    assert b45decode(b45encode(data)) == data


@pytest.mark.parametrize("text", ["GGW", "A", "ABCD", "abc", "::::", "QED8WEX0!"])
def test_base45_strict(text: str) -> None:
    # "GGW" is 65,536 (one above two bytes), ":::" likewise; lower case is outside the alphabet.
    with pytest.raises(DecodeError):
        b45decode(text)


def test_round_trip_is_exact_and_verifies() -> None:
    for text in (
        present_one_way(AGE, HOLDER, disclose=["age_over_18"], now=NOW),
        present(ID, HOLDER, disclose=["given_name", "note"], audience="hotel", nonce="n0", now=NOW),
        present(ID, HOLDER, disclose=[], audience="hotel", nonce="n0", now=NOW),
        ID.compact,  # an issued credential (no KB-JWT) packs too
    ):
        payload = to_qr_text(text)
        assert payload.startswith(QR_PREFIX) and from_qr_text(payload) == text
        assert from_qr_text(f"  {payload}\n") == text  # scanners add whitespace
    one_way = present_one_way(AGE, HOLDER, disclose=["age_over_18"], now=NOW)
    seen = Verifier(audience="till").verify(from_qr_text(to_qr_text(one_way)), now=NOW + 2)
    assert seen.claims == {"age_over_18": True}


def test_age_check_fits_a_small_qr_code() -> None:
    text = present_one_way(AGE, HOLDER, disclose=["age_over_18"], now=NOW)
    payload = to_qr_text(text)
    assert len(payload) < len(text)  # smaller than the compact text itself
    code = qr_code(text)
    assert code.error == "M" and code.mode == "alphanumeric"
    assert code.version <= 25, (len(payload), code.version)  # a phone at a till reads it at arm's length


def _payload(value: object) -> str:
    return QR_PREFIX + b45encode(zlib.compress(pack(value)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "MCVP1:",
        "MCVP2:BB8",
        "mcvp1:BB8",
        QR_PREFIX + "BB8",  # base45 fine, not zlib
        QR_PREFIX + b45encode(zlib.compress(b"\xc1")),  # not msgpack
        QR_PREFIX + b45encode(zlib.compress(b"x")[:-2]),  # truncated stream
        QR_PREFIX + b45encode(zlib.compress(b"x") + b"junk"),  # data after the stream
        _payload({1: 2}),
        _payload([]),
        _payload(["1"]),
        _payload([1, b"a", b"b"]),
        _payload([1, b"a", b"b", b"c", [b""], []]),
        _payload([1, b"a", b"b", b"c", [], [b"x"]]),
        _payload([1, b"a", b"b", b"c", "d", []]),
        _payload([1, b"a", b"b", 5, [], []]),
        _payload([1, b"", b"b", b"c", [], []]),
    ],
)
def test_malformed_payloads_typed(text: str) -> None:
    with pytest.raises(DecodeError):
        from_qr_text(text)


def test_unknown_version() -> None:
    with pytest.raises(UnsupportedVersion):
        from_qr_text(_payload([2, b"a", b"b", b"c", [], []]))


def test_bounds_before_work() -> None:
    with pytest.raises(TooLarge):
        from_qr_text(QR_PREFIX + "0" * 5000)
    bomb = QR_PREFIX + b45encode(zlib.compress(bytes(MAX_INFLATED + 1), 9))
    assert len(bomb) < 4296
    with pytest.raises(TooLarge):
        from_qr_text(bomb)


def test_to_qr_text_refuses_malformed_presentations() -> None:
    with pytest.raises(DecodeError):
        to_qr_text("not~a~presentation")


@settings(max_examples=300, deadline=None)
@given(
    data=st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", max_size=300),
    prefixed=st.booleans(),
)
def test_random_payloads_never_crash(data: str, prefixed: bool) -> None:
    try:
        result = from_qr_text((QR_PREFIX if prefixed else "") + data)
    except MeshchatError:
        return
    with pytest.raises(MeshchatError):  # whatever decodes is still no valid presentation
        Verifier(audience="till").verify(result, now=NOW)


PAYLOAD = to_qr_text(present_one_way(AGE, HOLDER, disclose=["age_over_18"], now=NOW))


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=len(QR_PREFIX), max_value=len(PAYLOAD) - 1), char=st.sampled_from("0A $:"))
def test_altered_payload_never_verifies(index: int, char: str) -> None:
    """An altered payload fails, or decodes to the very same presentation: the padding bits of
    deflate's last byte are not covered by its checksum (which covers the inflated bytes), so a few
    spellings of the last characters carry the same bytes; nothing else ever verifies."""
    altered = PAYLOAD[:index] + char + PAYLOAD[index + 1 :]
    if altered == PAYLOAD:
        return
    try:
        presentation = from_qr_text(altered)
    except MeshchatError:
        return
    if presentation == from_qr_text(PAYLOAD):
        return
    with pytest.raises(MeshchatError):
        Verifier(audience="till").verify(presentation, now=NOW)


def test_every_single_character_change_fails_or_carries_the_same_presentation() -> None:
    """The exhaustive version of the property above, over every position and a spread of characters
    (it found the deflate padding spellings); the same presentation is never a different claim."""
    original = from_qr_text(PAYLOAD)
    same = 0
    for index in range(len(QR_PREFIX), len(PAYLOAD)):
        for char in "0A $:./+-%":
            altered = PAYLOAD[:index] + char + PAYLOAD[index + 1 :]
            if altered == PAYLOAD:
                continue
            try:
                presentation = from_qr_text(altered)
            except MeshchatError:
                continue
            if presentation == original:
                same += 1
                continue
            with pytest.raises(MeshchatError):
                Verifier(audience="till").verify(presentation, now=NOW)
    assert same < 20  # only the last characters' padding bits: a handful of spellings
