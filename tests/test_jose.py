"""meshchat.wire.jose: strict base64url and JSON, EdDSA compact JWS, did:key and JWK (RFC 8037 vectors)."""

from __future__ import annotations

import json

import base58
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk as jw_jwk
from jwcrypto import jws as jw_jws

from meshchat.errors import BadSignature, DecodeError, MeshchatError, TooLarge
from meshchat.identity import Identity
from meshchat.wire.jose import (
    MAX_JSON_DEPTH,
    b64url_decode,
    b64url_encode,
    did_key,
    dump_json,
    jwk_of,
    parse_json,
    parse_jws,
    public_of_did,
    public_of_jwk,
    sign_jws,
    verify_jws,
)

# RFC 8037 appendix A.1 / A.4: the Ed25519 key and the JWS of "Example of Ed25519 signing".
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
KEY = Identity(b64url_decode(RFC8037_D, what="d"))
OTHER = Identity(bytes([5]) * 32)


def test_rfc8037_vectors() -> None:
    assert b64url_encode(KEY.public.ed25519) == RFC8037_X
    assert jwk_of(KEY.public) == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    header, payload, signature = RFC8037_JWS.split(".")
    # Ed25519 is deterministic: our key makes the RFC's signature byte for byte.
    assert KEY.sign(f"{header}.{payload}".encode()) == b64url_decode(signature, what="sig")
    with pytest.raises(DecodeError, match="payload"):  # its payload is text, not a JSON object
        parse_jws(RFC8037_JWS, what="rfc")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and b64url_decode(text, what="t") == data


@pytest.mark.parametrize("text", ["QQ==", "QQ=", "Q", "QR", "a+b/", "a b", "ä", "QR\n"])
def test_b64url_strict(text: str) -> None:
    # "QR" decodes to b"A" with stray low bits: the canonical spelling is "QQ".
    with pytest.raises(DecodeError):
        b64url_decode(text, what="t")


def test_b64url_not_text() -> None:
    with pytest.raises(DecodeError):
        b64url_decode(b"QQ", what="t")  # type: ignore[arg-type]  # hostile JSON can carry any type


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b"NaN",
        b"[Infinity]",
        b'{"a":-Infinity}',
        b"\xff",
        b"{",
        b"",
        b"[1,]",
        b"1e999",
        b"[-1e400]",
    ],
)
def test_parse_json_strict(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_json(data, what="t")


def test_parse_json_depth_and_size() -> None:
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, what="t") is not None
    with pytest.raises(DecodeError, match="nested"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), what="t")
    assert parse_json(b'["' + b"[" * 40 + b'"]', what="t") == ["[" * 40]  # brackets inside strings
    with pytest.raises(TooLarge):
        parse_json(b"1" * 11, what="t", max_size=10)


def test_dump_json_compact_utf8() -> None:
    assert dump_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(ValueError):
        dump_json(float("nan"))


def test_sign_parse_verify_round_trip() -> None:
    token = sign_jws({"typ": "x+jwt", "alg": "none"}, {"iss": "me", "n": 1}, KEY.sign)
    jws = parse_jws(token, what="t")
    assert jws.header == {"alg": "EdDSA", "typ": "x+jwt"}  # alg forced, first
    assert jws.payload == {"iss": "me", "n": 1} and jws.compact == token
    verify_jws(jws, KEY.public, what="t")
    with pytest.raises(BadSignature):
        verify_jws(jws, OTHER.public, what="t")


def _jws_with_header(header: dict[str, object]) -> str:
    h = b64url_encode(json.dumps(header).encode())
    p = b64url_encode(b'{"a":1}')
    return f"{h}.{p}.{b64url_encode(KEY.sign(f'{h}.{p}'.encode()))}"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none"},
        {"alg": "HS256"},
        {"alg": "ES256"},
        {},
        {"alg": "EdDSA", "crit": ["b64"], "b64": False},
    ],
)
def test_algorithms_and_crit_refused(header: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        parse_jws(_jws_with_header(header), what="t")


def test_fully_specified_ed25519_alg_read() -> None:
    jws = parse_jws(_jws_with_header({"alg": "Ed25519"}), what="t")
    verify_jws(jws, KEY.public, what="t")


@pytest.mark.parametrize("text", ["a.b", "a.b.c.d", "..", "e30.e30.AAAA", 5, "x" * 300_000])
def test_parse_jws_malformed(text: object) -> None:
    with pytest.raises(DecodeError):
        parse_jws(text, what="t")  # type: ignore[arg-type]  # non-text is hostile input too


def test_did_key_round_trip_and_strictness() -> None:
    did = did_key(KEY.public)
    assert did.startswith("did:key:z6Mk") and public_of_did(did) == KEY.public
    raw = base58.b58decode(did[len("did:key:z") :])
    secp = "did:key:z" + base58.b58encode(b"\xe7\x01" + raw[2:]).decode()
    for bad in (
        None,
        5,
        "did:web:example.org",
        "did:key:z0OIl",
        secp,
        "did:key:z" + base58.b58encode(b"\xed\x01" + bytes(32)).decode(),
    ):
        with pytest.raises(DecodeError):
            public_of_did(bad)


def test_public_of_jwk_strict() -> None:
    assert public_of_jwk(jwk_of(KEY.public)) == KEY.public
    for bad in (
        None,
        {"kty": "EC", "crv": "P-256", "x": RFC8037_X},
        {"kty": "OKP", "crv": "X25519", "x": RFC8037_X},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": RFC8037_D},
        {"kty": "OKP", "crv": "Ed25519", "x": 5},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519"},
    ):
        with pytest.raises(DecodeError):
            public_of_jwk(bad)


def test_jwcrypto_cross_check_both_directions() -> None:
    key = jw_jwk.JWK(kty="OKP", crv="Ed25519", x=RFC8037_X, d=RFC8037_D)
    assert json.loads(key.export_public()) == jwk_of(KEY.public)
    ours = sign_jws({"typ": "t"}, {"hello": "мир"}, KEY.sign)
    checked = jw_jws.JWS()
    checked.deserialize(ours)
    checked.verify(jw_jwk.JWK(**jwk_of(KEY.public)), alg="EdDSA")
    assert json.loads(checked.payload) == {"hello": "мир"}
    theirs = jw_jws.JWS(b'{"from":"jwcrypto"}')
    theirs.add_signature(key, alg="EdDSA", protected=json.dumps({"alg": "EdDSA"}))
    parsed = parse_jws(theirs.serialize(compact=True), what="t")
    verify_jws(parsed, KEY.public, what="t")
    assert parsed.payload == {"from": "jwcrypto"}


@settings(max_examples=200, deadline=None)
@given(data=st.text(alphabet='ABCabc012-_.=~ {}"', max_size=200))
def test_parse_jws_hostile_text_typed(data: str) -> None:
    try:
        parse_jws(data, what="t")
    except MeshchatError:
        return
