"""Credential control messages: round trips, strict decoding, fuzzing (only DecodeError escapes)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshchat.credentials.messages import (
    MAX_CONTROL,
    ControlKind,
    CredentialRequest,
    IssuedCredential,
    decode_control,
    encode_issued,
    encode_request,
    is_credential_control,
)
from meshchat.errors import DecodeError, TooLarge
from meshchat.identity import Identity
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.jose import b64url_decode, b64url_encode, did_key, jwk_of, sign_jws

HOLDER = Identity(bytes(range(32)))
ISSUER = Identity(bytes(range(1, 33)))
NONCE = "A" * 21 + "Q"


def request_body(**changes: object) -> bytes:
    fields: dict[str, object] = {"issuer_did": did_key(ISSUER.public), "vct": "diploma", "nonce": NONCE}
    fields.update(changes)
    return encode_request(HOLDER, now=1_700_000_000, note="hi", **fields)  # type: ignore[arg-type]


def test_request_round_trip_proves_the_holder_key() -> None:
    body = request_body()
    assert is_credential_control(body)
    request = decode_control(body)
    assert isinstance(request, CredentialRequest)
    assert request.holder == HOLDER.public
    assert (request.audience, request.vct, request.nonce) == (did_key(ISSUER.public), "diploma", NONCE)
    assert (request.requested_at, request.note) == (1_700_000_000, "hi")


def test_issued_round_trip() -> None:
    body = encode_issued("a.b.c~d~", nonce=NONCE)
    assert is_credential_control(body)
    assert decode_control(body) == IssuedCredential(compact="a.b.c~d~", nonce=NONCE)


def test_other_controls_are_not_credential_controls() -> None:
    assert not is_credential_control(pack({1: 64, 2: b"offer"}))
    assert not is_credential_control(pack({1: 65, 2: 1, 3: b"", 4: b""}))
    assert not is_credential_control(b"\x84\x01")


def test_a_proof_signed_by_another_key_is_refused() -> None:
    header = {"typ": "meshchat-credential-request+jwt", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": ""}}
    header["jwk"] = jwk_of(HOLDER.public)
    payload = {"aud": did_key(ISSUER.public), "nonce": NONCE, "vct": "diploma", "iat": 1}
    forged = sign_jws(header, payload, ISSUER.sign)  # names HOLDER's key, signed by ISSUER's
    body = pack({1: 66, 2: 1, 3: forged, 4: ""})
    with pytest.raises(DecodeError, match="not signed by the key it names"):
        decode_control(body)


def test_an_altered_request_field_is_refused() -> None:
    fields = unpack_canonical(request_body(), what="t", limit=MAX_CONTROL)
    assert isinstance(fields, dict)
    head, payload, signature = fields[3].split(".")
    changed = b64url_decode(payload, what="t").replace(b"diploma", b"passport")
    body = pack({**fields, 3: f"{head}.{b64url_encode(changed)}.{signature}"})
    with pytest.raises(DecodeError):
        decode_control(body)


@pytest.mark.parametrize(
    "fields",
    [
        {1: 66, 2: 3, 3: "x", 4: NONCE},  # unknown kind
        {1: 66, 2: 2, 3: "x", 4: "short"},  # bad nonce
        {1: 66, 2: 2, 3: b"x", 4: NONCE},  # bytes, not text
        {1: 66, 2: 2, 3: "x"},  # missing field
        {1: 66, 2: 2, 3: "x", 4: NONCE, 5: 0},  # extra field
        {1: 66, 2: True, 3: "x", 4: NONCE},  # a bool is not a kind
        {1: 66, 2: 1, 3: "not a jws", 4: ""},
        {1: 66, 2: 1, 3: "x", 4: "n" * 501},  # note too long
    ],
)
def test_malformed_controls_raise_decode_error(fields: dict[int, object]) -> None:
    with pytest.raises(DecodeError):
        decode_control(pack(fields))


def test_oversized_control_is_refused_before_parsing() -> None:
    with pytest.raises(TooLarge):
        decode_control(b"\x84\x01\x42" + b"\x00" * MAX_CONTROL)


def test_encoder_refuses_what_the_decoder_would() -> None:
    with pytest.raises(ValueError, match="credential type"):
        request_body(vct="")
    with pytest.raises(ValueError, match="nonce"):
        request_body(nonce="abc")
    with pytest.raises(ValueError, match="note"):
        encode_request(HOLDER, issuer_did="did:key:z6Mk", vct="t", nonce=NONCE, now=0, note="x" * 501)
    assert ControlKind(1) is ControlKind.REQUEST


@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_control(data)


@given(st.integers(0, 3), st.binary(max_size=300), st.integers(0, 300))
def test_mutated_requests_raise_only_decode_error(mode: int, noise: bytes, position: int) -> None:
    body = bytearray(request_body())
    index = position % len(body)
    if mode == 0:
        body[index] ^= noise[0] if noise and noise[0] else 1
    elif mode == 1:
        body[index:index] = noise
    elif mode == 2:
        del body[index : index + len(noise) + 1]
    else:
        body = bytearray(pack({1: 66, 2: 1, 3: noise.decode("latin-1"), 4: ""}))
    with contextlib.suppress(DecodeError):
        decode_control(bytes(body))
