"""Detached signatures (meshchat.documents.signature): round trips, every field checked, any alteration
of the signature text or of the document refused with a typed error, and jwcrypto verifies ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk, jws  # an independent JOSE stack, as a cross-check

from meshchat.documents.signature import (
    MAX_PURPOSE,
    MAX_SIGNATURE_SIZE,
    SIGNATURE_TYP,
    digest_bytes,
    digest_file,
    parse_signature,
    sign_digest,
    sign_document,
    verify_document,
)
from meshchat.errors import (
    BadSignature,
    DecodeError,
    DocumentMismatch,
    MeshchatError,
    TooLarge,
    UnsupportedVersion,
)
from meshchat.identity import Identity
from meshchat.wire.jose import b64url_decode, b64url_encode, did_key, dump_json, sign_jws

ALICE = Identity(bytes(range(32)))
MALLORY = Identity(bytes(range(1, 33)))
NOW = 1_780_000_000.0
DOC = b"I, Alice, agree to pay Bob 10 EUR.\n"


def _forge(header: dict[str, object], payload: dict[str, object], who: Identity = ALICE) -> str:
    return sign_jws(header, payload, who.sign)


def _payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "iss": did_key(ALICE.public),
        "iat": int(NOW),
        "sub": digest_bytes(DOC),
        "hash": "sha-256",
        "size": len(DOC),
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


HEADER = {"typ": SIGNATURE_TYP, "v": 1}


def test_round_trip_names_signer_time_digest_and_purpose() -> None:
    text = sign_document(ALICE, DOC, now=NOW + 0.7, name="iou.txt", purpose="loan")
    info = verify_document(digest_bytes(DOC), text)
    assert info.signer == ALICE.public
    assert info.signer_did == did_key(ALICE.public)
    assert info.signed_at == float(int(NOW))
    assert (info.size, info.name, info.purpose, info.cosign) == (len(DOC), "iou.txt", "loan", None)
    assert info.compact == text
    assert "\n" not in text and text.count(".") == 2
    header = json.loads(b64url_decode(text.split(".")[0], what="t"))
    assert header == {"alg": "EdDSA", "typ": "meshchat-signature+jwt", "v": 1}


def test_optional_members_absent_and_trailing_newline_tolerated() -> None:
    text = sign_document(ALICE, DOC, now=NOW)
    payload = json.loads(b64url_decode(text.split(".")[1], what="t"))
    assert set(payload) == {"iss", "iat", "sub", "hash", "size"}
    info = parse_signature(text + "\n")  # as read from a .sig file
    assert info.name is None and info.purpose is None


def test_cosign_member_round_trips() -> None:
    text = sign_digest(ALICE, digest_bytes(DOC), len(DOC), now=NOW, cosign="A" * 22)
    assert parse_signature(text).cosign == "A" * 22


def test_digest_file_streams_and_matches_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 1 MiB: several reads
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert digest_file(path) == (digest_bytes(data), len(data))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert digest_file(str(empty)) == (digest_bytes(b""), 0)


def test_altered_document_is_a_mismatch_naming_both_digests() -> None:
    text = sign_document(ALICE, DOC, now=NOW)
    other = digest_bytes(DOC.replace(b"10", b"99"))
    with pytest.raises(DocumentMismatch) as caught:
        verify_document(other, text)
    assert caught.value.signed == digest_bytes(DOC) and caught.value.actual == other


def test_another_key_claiming_to_be_the_signer_is_a_bad_signature() -> None:
    forged = _forge(HEADER, _payload(), who=MALLORY)  # iss says Alice, Mallory signs
    with pytest.raises(BadSignature):
        parse_signature(forged)


def test_unknown_version_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        parse_signature(_forge({"typ": SIGNATURE_TYP, "v": 2}, _payload()))
    assert caught.value.version == 2 and caught.value.supported == (1,)


@pytest.mark.parametrize(
    ("header", "payload", "problem"),
    [
        ({"typ": "JWT", "v": 1}, _payload(), "typ"),
        ({"typ": SIGNATURE_TYP}, _payload(), "version"),
        ({"typ": SIGNATURE_TYP, "v": True}, _payload(), "version"),
        (HEADER, _payload(iss="did:web:example.com"), "did:key"),
        (HEADER, _payload(iat="yesterday"), "iat"),
        (HEADER, _payload(iat=NOW + 0.5), "iat"),
        (HEADER, _payload(sub="abc"), "digest"),
        (HEADER, _payload(sub=b64url_encode(bytes(31))), "digest"),
        (HEADER, _payload(hash="md5"), "hash"),
        (HEADER, _payload(size=-1), "size"),
        (HEADER, _payload(size=True), "size"),
        (HEADER, _payload(purpose="x" * (MAX_PURPOSE + 1)), "purpose"),
        (HEADER, _payload(purpose=7), "purpose"),
        (HEADER, _payload(name=["a"]), "name"),
        (HEADER, _payload(cosign="short"), "document id"),
    ],
)
def test_malformed_members_are_decode_errors(
    header: dict[str, object], payload: dict[str, object], problem: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        parse_signature(_forge(header, payload))
    assert problem in str(caught.value)


def test_oversized_and_non_jws_text_refused_before_parsing() -> None:
    with pytest.raises(TooLarge):
        parse_signature("a" * (MAX_SIGNATURE_SIZE + 1))
    with pytest.raises(DecodeError):
        parse_signature("not a signature")
    with pytest.raises(DecodeError):
        parse_signature(b"bytes".decode() + ".x.y")


def test_sign_refuses_what_a_reader_would_refuse() -> None:
    with pytest.raises(ValueError, match="purpose"):
        sign_document(ALICE, DOC, now=NOW, purpose="p" * (MAX_PURPOSE + 1))
    with pytest.raises(ValueError, match="digest"):
        sign_digest(ALICE, "abc", 3, now=NOW)
    with pytest.raises(ValueError, match="size"):
        sign_digest(ALICE, digest_bytes(DOC), -1, now=NOW)
    with pytest.raises(ValueError, match="document id"):
        sign_digest(ALICE, digest_bytes(DOC), 1, now=NOW, cosign="x")


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_any_altered_character_of_a_signature_fails_typed(position: int, replacement: str) -> None:
    text = sign_document(ALICE, DOC, now=NOW, purpose="agree")
    position %= len(text)
    altered = text[:position] + replacement + text[position + 1 :]
    if altered == text:
        return
    with pytest.raises(MeshchatError):
        verify_document(digest_bytes(DOC), altered)


@settings(max_examples=100, deadline=None)
@given(doc=st.binary(max_size=300), flip=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_altered_document_fails_with_mismatch(doc: bytes, flip: int, bit: int) -> None:
    text = sign_document(ALICE, doc, now=NOW)
    assert verify_document(digest_bytes(doc), text).size == len(doc)
    if not doc:
        altered = b"\x00"
    else:
        i = flip % len(doc)
        altered = doc[:i] + bytes([doc[i] ^ (1 << bit)]) + doc[i + 1 :]
    with pytest.raises(DocumentMismatch):
        verify_document(digest_bytes(altered), text)


def test_jwcrypto_verifies_our_signature() -> None:
    text = sign_document(ALICE, DOC, now=NOW, purpose="interop")
    key = jwk.JWK(kty="OKP", crv="Ed25519", x=b64url_encode(ALICE.public.ed25519))
    token = jws.JWS()
    token.deserialize(text)
    token.verify(key)
    payload = json.loads(token.payload)
    assert payload["sub"] == digest_bytes(DOC) and payload["purpose"] == "interop"


def test_payload_is_compact_json_in_a_fixed_order() -> None:
    text = sign_document(ALICE, DOC, now=NOW, name="n")
    raw = b64url_decode(text.split(".")[1], what="t")
    assert raw == dump_json(_payload(name="n"))
