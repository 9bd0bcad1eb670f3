"""Token Status Lists: issuer lists, signed tokens, the verifier's cache, the gossip validator."""

from __future__ import annotations

import json
import zlib
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.credentials import (
    MAX_CACHED_LISTS,
    StatusCache,
    StatusList,
    StatusRef,
    check_status_message,
    parse_status_token,
    status_topic,
    status_uri,
)
from meshchat.credentials.status import MAX_LIST_SIZE, MAX_LISTS_PER_ISSUER
from meshchat.errors import BadSignature, CredentialError, DecodeError, MeshchatError, TooLarge
from meshchat.identity import Identity
from meshchat.wire.jose import b64url_decode, b64url_encode, did_key, sign_jws

NOW = 1_780_000_000.0
ISSUER = Identity(bytes([7]) * 32)
MALLORY = Identity(bytes([8]) * 32)
DID = did_key(ISSUER.public)
URI = status_uri(DID, "main")


def seeded_bytes(seed: int = 0) -> object:
    numbers = count(seed)
    return lambda n: (next(numbers) * 2_654_435_761 % 2**32).to_bytes(4, "big")[:n].rjust(n, b"\0")


def _token(payload: dict[str, object], signer: Identity = ISSUER) -> str:
    return sign_jws({"typ": "statuslist+jwt"}, payload, signer.sign)


def test_spec_example_bit_order() -> None:
    # draft-ietf-oauth-status-list, 1-bit example: bytes b9 a3, lst "eNrbuRgAAhcBXQ".
    token = _token(
        {
            "iss": DID,
            "sub": URI,
            "iat": int(NOW),
            "ttl": 60,
            "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"},
        }
    )
    parsed = parse_status_token(token)
    expected = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    assert [parsed.revoked(i) for i in range(16)] == [bool(b) for b in expected]
    assert parsed.revoked(16) is None and parsed.revoked(-1) is None
    ours = StatusList(URI, size=16)
    for index, bit in enumerate(expected):
        if bit:
            ours.revoke(index)
    assert ours.bits == bytes.fromhex("b9a3")
    lst = json.loads(b64url_decode(ours.token(ISSUER, now=NOW).split(".")[1], what="t"))["status_list"]["lst"]
    assert lst == "eNrbuRgAAhcBXQ"


def test_allocate_random_distinct_until_full() -> None:
    status_list = StatusList(URI, size=64)
    refs = [status_list.allocate(seeded_bytes()) for _ in range(64)]
    indexes = [ref.index for ref in refs]
    assert sorted(indexes) == list(range(64))
    assert indexes != sorted(indexes)  # not in issuance order
    assert all(ref.uri == URI for ref in refs)
    with pytest.raises(CredentialError):
        status_list.allocate(seeded_bytes())


def test_persist_round_trip() -> None:
    status_list = StatusList(URI, size=128)
    refs = [status_list.allocate(seeded_bytes()) for _ in range(5)]
    status_list.revoke(refs[2].index)
    again = StatusList.from_bytes(URI, status_list.to_bytes())
    assert again.bits == status_list.bits and again.is_revoked(refs[2].index)
    assert not again.is_revoked(refs[1].index)
    new = again.allocate(seeded_bytes(99))
    assert new.index not in {ref.index for ref in refs}
    for junk in (b"", b"\x80", b"\x83\x01\x08\x02\xc4\x00\x03\xc4\x00", status_list.to_bytes()[:-1]):
        with pytest.raises(DecodeError):
            StatusList.from_bytes(URI, junk)


def test_bad_list_arguments() -> None:
    with pytest.raises(ValueError):
        StatusList("https://example.org/list")
    with pytest.raises(ValueError):
        StatusList(URI, size=10)
    with pytest.raises(ValueError):
        StatusList(status_uri(did_key(MALLORY.public), "main")).token(ISSUER, now=NOW)


def test_cache_keeps_newest_and_reports_age() -> None:
    status_list = StatusList(URI, size=64)
    ref = status_list.allocate(seeded_bytes())
    cache = StatusCache()
    assert cache.lookup(ref, DID, now=NOW) is None
    old = status_list.token(ISSUER, now=NOW - 100)
    status_list.revoke(ref.index)
    new = status_list.token(ISSUER, now=NOW - 10)
    assert cache.put(new, now=NOW)
    assert not cache.put(old, now=NOW)  # an older list never replaces a newer one (no un-revoking)
    assert not cache.put(new, now=NOW)
    assert cache.lookup(ref, DID, now=NOW) == (True, 10.0)
    assert cache.age(DID, now=NOW) == 10.0 and cache.age("did:key:other", now=NOW) is None
    assert cache.lookup(ref, did_key(MALLORY.public), now=NOW) is None  # asked for another issuer
    assert cache.lookup(StatusRef(URI, 10_000), DID, now=NOW) is None  # beyond the list
    assert cache.tokens() == [new]
    assert not cache.put(status_list.token(ISSUER, now=NOW + 3600), now=NOW)  # from the future


def test_cache_is_bounded() -> None:
    cache = StatusCache(capacity=3)
    for name in "abcde":
        assert cache.put(StatusList(status_uri(DID, name), size=8).token(ISSUER, now=NOW), now=NOW)
    assert len(cache) == 3
    assert MAX_CACHED_LISTS == 4096


def test_one_issuer_cannot_evict_the_others() -> None:
    cache = StatusCache(capacity=100)
    other = StatusList(status_uri(did_key(MALLORY.public), "x"), size=8)
    assert cache.put(other.token(MALLORY, now=NOW), now=NOW)
    for i in range(MAX_LISTS_PER_ISSUER + 10):
        assert cache.put(StatusList(status_uri(DID, f"l{i}"), size=8).token(ISSUER, now=NOW), now=NOW)
    assert len(cache) == MAX_LISTS_PER_ISSUER + 1
    assert cache.lookup(StatusRef(other.uri, 0), did_key(MALLORY.public), now=NOW) == (False, 0.0)
    assert cache.lookup(StatusRef(status_uri(DID, "l0"), 0), DID, now=NOW) is None  # its oldest went
    newest = status_uri(DID, f"l{MAX_LISTS_PER_ISSUER + 9}")
    assert cache.lookup(StatusRef(newest, 0), DID, now=NOW) == (False, 0.0)


def test_expired_token_refused() -> None:
    lst = b64url_encode(zlib.compress(bytes(8)))
    token = _token(
        {
            "iss": DID,
            "sub": URI,
            "iat": int(NOW) - 100,
            "exp": int(NOW) - 1,
            "ttl": 60,
            "status_list": {"bits": 1, "lst": lst},
        }
    )
    assert not StatusCache().put(token, now=NOW)


def test_token_for_someone_elses_list_refused() -> None:
    lst = b64url_encode(zlib.compress(bytes(8)))
    # Mallory signs a list under the issuer's uri, naming herself or the issuer as iss.
    for iss in (did_key(MALLORY.public), DID):
        forged = _token(
            {"iss": iss, "sub": URI, "iat": int(NOW), "ttl": 60, "status_list": {"bits": 1, "lst": lst}},
            MALLORY,
        )
        with pytest.raises((DecodeError, BadSignature)):
            StatusCache().put(forged, now=NOW)
        assert not check_status_message(status_topic(DID), forged.encode())


def test_zip_bomb_refused_before_inflating_it_all() -> None:
    bomb = b64url_encode(zlib.compress(bytes(MAX_LIST_SIZE // 8 + 1), 9))
    token = _token(
        {"iss": DID, "sub": URI, "iat": int(NOW), "ttl": 60, "status_list": {"bits": 1, "lst": bomb}}
    )
    with pytest.raises(TooLarge):
        parse_status_token(token)


@pytest.mark.parametrize(
    "status_list",
    [
        None,
        [],
        {"bits": 2, "lst": "eNrbuRgAAhcBXQ"},
        {"bits": True, "lst": "eNrbuRgAAhcBXQ"},
        {"bits": 1, "lst": 5},
        {"bits": 1, "lst": "eNrbuRgAAhcB"},
        {"bits": 1, "lst": "AAAA"},
    ],
)
def test_malformed_status_list_typed(status_list: object) -> None:
    token = _token({"iss": DID, "sub": URI, "iat": int(NOW), "ttl": 60, "status_list": status_list})
    with pytest.raises(DecodeError):
        parse_status_token(token)


def test_gossip_validator() -> None:
    token = StatusList(URI, size=8).token(ISSUER, now=NOW)
    assert check_status_message(status_topic(DID), token.encode())
    assert not check_status_message(status_topic(did_key(MALLORY.public)), token.encode())
    assert not check_status_message("/other", token.encode())
    assert not check_status_message(status_topic(DID), b"\xff\xfe")
    assert status_topic(DID) == "/meshchat/status/1/" + DID


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), flip=st.integers(min_value=0, max_value=10_000))
def test_hostile_tokens_never_crash(data: bytes, flip: int) -> None:
    assert not check_status_message(status_topic(DID), data)
    token = StatusList(URI, size=8).token(ISSUER, now=NOW)
    index = flip % len(token)
    altered = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
    assert not check_status_message(status_topic(DID), altered.encode())
    with pytest.raises(MeshchatError):
        StatusCache().put(altered, now=NOW)
