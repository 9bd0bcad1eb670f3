"""Cross-checks with independent implementations: the ``sd_jwt`` package (OpenWallet's reference
SD-JWT library) and jwcrypto, in both directions.

- Theirs checks ours: ``SDJWTVerifier`` verifies the issuer signature and recovers exactly the
  disclosed claims; its KB-JWT check (asked for EdDSA: it defaults to ES256) and a separate jwcrypto
  check of the KB-JWT with the ``cnf`` key and an sd_hash computed here with hashlib pass.
- Ours checks theirs: a credential the sd_jwt package issued with an Ed25519 key (decoys on) parses,
  and the presentation its holder made verifies with meshchat's Verifier; what we do not support
  (nested and array-element disclosures) is refused with a typed error, not misread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS, InvalidJWSSignature
from sd_jwt.common import SDObj
from sd_jwt.holder import SDJWTHolder
from sd_jwt.issuer import SDJWTIssuer
from sd_jwt.verifier import SDJWTVerifier

from meshchat.credentials import Credential, Verifier, holder_key, issue, present
from meshchat.errors import BadDisclosure, DecodeError, WrongHolder
from meshchat.identity import Identity
from meshchat.wire.jose import b64url_encode, did_key, jwk_of

NOW = 1_780_000_000.0
ISSUER = Identity(bytes([7]) * 32)
HOLDER = holder_key(bytes([9]) * 32, bytes(16))
CLAIMS: dict[str, object] = {
    "given_name": "Алиса",
    "family_name": "Ivanova",
    "document_number": "4510 123456",
    "address": {"city": "Kazan", "street": "Baumana 1"},
    "age_over_18": True,
}


def private_jwk(identity: Identity) -> JWK:
    """The jwcrypto private JWK of a meshchat identity (RFC 8037: d is the seed)."""
    return JWK(**jwk_of(identity.public), d=b64url_encode(identity.seed))


def issuer_key_callback(iss: str, header: dict[str, object]) -> JWK:
    assert iss == did_key(ISSUER.public) and header["alg"] == "EdDSA"
    return JWK(**jwk_of(ISSUER.public))


@pytest.mark.parametrize(
    "chosen", [[], ["given_name"], ["given_name", "address", "age_over_18"], list(CLAIMS)]
)
def test_sd_jwt_package_verifies_ours(chosen: list[str]) -> None:
    credential = issue(ISSUER, holder=HOLDER.public, vct="id", claims=CLAIMS, now=NOW, valid_for=3600)
    text = present(credential, HOLDER, disclose=chosen, audience="hotel", nonce="n-123", now=NOW)
    verifier = SDJWTVerifier(text, issuer_key_callback)  # issuer signature + disclosures
    payload = verifier.get_verified_payload()
    assert {k: payload[k] for k in CLAIMS if k in payload} == {k: CLAIMS[k] for k in chosen}
    assert payload["vct"] == "id" and payload["iss"] == did_key(ISSUER.public)
    assert payload["cnf"] == {"jwk": jwk_of(HOLDER.public)}
    verifier._verify_key_binding_jwt("hotel", "n-123", sign_alg="EdDSA")  # their KB check, asked for EdDSA
    with pytest.raises(ValueError, match="nonce"):
        verifier._verify_key_binding_jwt("hotel", "other", sign_alg="EdDSA")

    # jwcrypto on its own: the KB-JWT is the cnf key's EdDSA signature over an sd_hash we recompute.
    prefix, _, kb = text.rpartition("~")
    kb_jws = JWS()
    kb_jws.deserialize(kb)
    kb_jws.verify(JWK(**payload["cnf"]["jwk"]), alg="EdDSA")
    assert kb_jws.jose_header == {"alg": "EdDSA", "typ": "kb+jwt"}
    kb_payload = json.loads(kb_jws.payload)
    expected = (
        base64.urlsafe_b64encode(hashlib.sha256((prefix + "~").encode()).digest()).rstrip(b"=").decode()
    )
    assert kb_payload == {"iat": int(NOW), "aud": "hotel", "nonce": "n-123", "sd_hash": expected}


def test_sd_jwt_package_refuses_our_credential_from_another_issuer_key() -> None:
    credential = issue(ISSUER, holder=HOLDER.public, vct="id", claims=CLAIMS, now=NOW)
    text = present(credential, HOLDER, disclose=["given_name"], audience="a", nonce="n", now=NOW)
    with pytest.raises(InvalidJWSSignature):
        SDJWTVerifier(text, lambda iss, header: JWK(**jwk_of(HOLDER.public)))


def _their_issuance(claims: dict[object, object]) -> str:
    user_claims: dict[object, object] = {
        "iss": did_key(ISSUER.public),
        "iat": int(NOW),
        "vct": "id",
        **claims,
    }
    issuer = SDJWTIssuer(
        user_claims,
        private_jwk(ISSUER),
        holder_key=private_jwk(HOLDER),
        sign_alg="EdDSA",
        add_decoy_claims=True,
        extra_header_parameters={"typ": "dc+sd-jwt"},
    )
    return str(issuer.sd_jwt_issuance)


def test_ours_verifies_one_the_sd_jwt_package_issued() -> None:
    issuance = _their_issuance(
        {SDObj(name): value for name, value in CLAIMS.items()} | {"plain": "always shown"}
    )
    credential = Credential.parse(issuance)
    assert credential.claims == CLAIMS | {"plain": "always shown"}
    assert credential.issuer == ISSUER.public and credential.holder == HOLDER.public

    holder = SDJWTHolder(issuance)
    nonce = Verifier(audience="hotel").challenge()
    holder.create_presentation(
        {"given_name": True, "age_over_18": True}, nonce, "hotel", private_jwk(HOLDER), "EdDSA"
    )
    text = str(holder.sd_jwt_presentation)
    now = time.time()  # the package stamps its KB-JWT with the wall clock
    seen = Verifier(audience="hotel").verify(text, now=now, nonce=nonce)
    assert seen.claims == {"given_name": "Алиса", "age_over_18": True, "plain": "always shown"}
    assert seen.issuer_did == did_key(ISSUER.public) and seen.holder == HOLDER.public

    # Their holder key signing for our holder's credential fails here too.
    other = SDJWTHolder(issuance)
    other.create_presentation({"given_name": True}, nonce, "hotel", private_jwk(Identity(bytes(32))), "EdDSA")
    with pytest.raises(WrongHolder):
        Verifier(audience="hotel").verify(str(other.sd_jwt_presentation), now=now, nonce=nonce)


def test_their_nested_and_array_disclosures_refused_typed() -> None:
    nested = _their_issuance({SDObj("address"): {SDObj("city"): "Kazan"}})
    with pytest.raises(BadDisclosure):
        Credential.parse(nested)
    array = _their_issuance({SDObj("nationalities"): [SDObj("RU"), "FR"]})
    with pytest.raises(BadDisclosure):
        Credential.parse(array)
    plain_nested = _their_issuance({"address": {SDObj("city"): "Kazan"}})
    with pytest.raises(BadDisclosure):
        Credential.parse(plain_nested)


def test_their_es256_credential_refused_typed() -> None:
    es_key = JWK.generate(kty="EC", crv="P-256")
    issuer = SDJWTIssuer({"iss": did_key(ISSUER.public), "iat": int(NOW), "vct": "id", SDObj("a"): 1}, es_key)
    with pytest.raises(DecodeError, match="not EdDSA"):
        Credential.parse(str(issuer.sd_jwt_issuance))
