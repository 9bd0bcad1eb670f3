"""Credentials as SD-JWT VCs (RFC 9901, SD-JWT VC) with EdDSA: issue, present, verify offline.

What it is: the issuer signs a JWT whose ``_sd`` array commits to one salted disclosure per claim;
the holder shows the issuer JWT, the disclosures of the claims it chooses and a key binding JWT
(KB-JWT) signed with the key named in ``cnf``; the verifier checks all of it without a network.
What it is not: no storage and no transport (``meshchat.credentials.wallet`` and the api layer).

Choices where the formats leave room (see also :mod:`meshchat.credentials.sdjwt`):

- Issuer JWT header ``{"alg":"EdDSA","typ":"dc+sd-jwt"}``; ``iss`` is the issuer's ``did:key``, so any
  wallet resolves the key without a registry. ``iat``, ``nbf``, ``exp`` are integers.
- Every claim the issuer gives is selectively disclosable, top level; ``iss``, ``iat``, ``nbf``,
  ``exp``, ``vct``, ``cnf``, ``status`` are never disclosures (SD-JWT VC section 3.2.2.2).
- Holder binding (``cnf.jwk``) uses a key derived per credential from the holder's seed
  (:func:`holder_key`): verifiers never see the messenger identity, and two credentials of one person
  carry unrelated keys.
- Predicates (``age_over_18`` ...) are plain boolean claims the issuer computes ahead, so a till learns
  one bit and not a birth date.
- Challenge mode: the verifier's nonce and audience go into the KB-JWT; a nonce made by
  :meth:`Verifier.challenge` is accepted once.
- One-way mode (a till scans a phone and nothing scans back): ``aud`` is ``ONE_WAY_AUDIENCE`` (or the
  till's own name), the nonce is the holder's random, and the KB-JWT is accepted for ``ONE_WAY_WINDOW``
  seconds after its ``iat`` (with ``CLOCK_SKEW`` either way). The replay this allows: someone who
  photographs the QR can show that copy at *another* till within the window (the same till refuses it
  a second time, from its replay cache). The copy only proves what the holder proved, within a minute.
  The replay cache is keyed by the KB-JWT's digest, not by ``sd_hash``: two presentations of the same
  claims share an ``sd_hash``, and a customer buying twice in a minute must not be refused.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshchat.credentials.sdjwt import (
    MAX_CLAIM_NAME,
    MAX_DISCLOSURES,
    SD_ALG,
    CompactParts,
    Disclosure,
    decoy_digests,
    digest_of,
    has_sd_syntax,
    join_compact,
    make_disclosure,
    parse_digest_list,
    parse_disclosure,
    sd_hash,
    split_compact,
    strip_undisclosed,
)
from meshchat.credentials.status import StatusCache, StatusRef
from meshchat.errors import (
    BadDisclosure,
    BadSignature,
    ChallengeMismatch,
    CredentialError,
    CredentialNotValid,
    CredentialRevoked,
    DecodeError,
    PresentationExpired,
    PresentationReplayed,
    StatusUnknown,
    UnknownIssuer,
    WrongHolder,
)
from meshchat.identity import SEED_SIZE, Identity, PublicIdentity, RandomBytes
from meshchat.wire.jose import (
    Jws,
    b64url_encode,
    did_key,
    jwk_of,
    parse_jws,
    public_of_did,
    public_of_jwk,
    sign_jws,
    verify_jws,
)

__all__ = [
    "CHALLENGE_LIFETIME",
    "CLOCK_SKEW",
    "HOLDER_KEY_INFO",
    "ISSUER_TYP",
    "KB_TYP",
    "KEY_ID_SIZE",
    "MAX_CHALLENGES",
    "MAX_ISSUER_KEYS",
    "MAX_REPLAY_ENTRIES",
    "NONCE_SIZE",
    "ONE_WAY_AUDIENCE",
    "ONE_WAY_WINDOW",
    "PREDICATES",
    "RESERVED_CLAIMS",
    "Credential",
    "Verified",
    "Verifier",
    "holder_key",
    "issue",
    "predicates_for",
    "present",
    "present_one_way",
]

#: ``typ`` of the issuer JWT (SD-JWT VC).
ISSUER_TYP: Final = "dc+sd-jwt"
#: ``typ`` of the key binding JWT (RFC 9901 section 4.3).
KB_TYP: Final = "kb+jwt"
#: The audience of a one-way presentation when the holder does not know the till's name.
ONE_WAY_AUDIENCE: Final = "meshchat:one-way"
#: How long a one-way presentation is accepted after it was made, seconds.
ONE_WAY_WINDOW: Final = 60
#: Clock difference tolerated between holder and verifier, seconds.
CLOCK_SKEW: Final = 30
#: How long a nonce from :meth:`Verifier.challenge` stays usable, seconds (someone reading a QR code).
CHALLENGE_LIFETIME: Final = 600
#: Outstanding challenges a verifier remembers: a busy desk makes a few per minute; oldest dropped.
MAX_CHALLENGES: Final = 10_000
#: One-way presentations remembered for the replay check: entries live one window, and no till sees
#: 100,000 customers a minute; beyond it the oldest are forgotten first (counted in ``statistics``).
MAX_REPLAY_ENTRIES: Final = 100_000
#: Issuer keys a verifier keeps resolved (did -> checked key): checking that a key is a usable point
#: costs as much as a signature check, and a till sees the same few issuers all day.
MAX_ISSUER_KEYS: Final = 4096
#: Random bytes in a nonce.
NONCE_SIZE: Final = 16
#: Bytes of a holder key id (the HKDF info suffix).
KEY_ID_SIZE: Final = 16
#: HKDF info prefix of a holder key.
HOLDER_KEY_INFO: Final = b"meshchat credential holder key"
#: The predicates meshchat names (boolean claims an issuer signs ahead).
PREDICATES: Final = ("age_over_18", "age_over_21", "student", "pensioner", "large_family")
#: Claims that are never selectively disclosable (they carry the credential's mechanics).
RESERVED_CLAIMS: Final = frozenset(
    {"iss", "iat", "nbf", "exp", "vct", "cnf", "status", "_sd", "_sd_alg", "..."}
)
#: Longest ``vct``, audience or nonce accepted, characters.
MAX_TEXT: Final = 256
#: Largest NumericDate accepted (year 36812): keeps every time an exact float.
_MAX_TIME: Final = 1 << 40


def holder_key(seed: bytes, key_id: bytes) -> Identity:
    """The holder key of one credential: HKDF-SHA256(seed, info = HOLDER_KEY_INFO + key_id)."""
    if len(seed) != SEED_SIZE or len(key_id) != KEY_ID_SIZE:
        raise ValueError(f"a holder key needs a {SEED_SIZE}-byte seed and a {KEY_ID_SIZE}-byte key id")
    okm = HKDF(algorithm=hashes.SHA256(), length=SEED_SIZE, salt=None, info=HOLDER_KEY_INFO + key_id).derive(
        seed
    )
    return Identity(okm)


def predicates_for(birth_date: date, today: date) -> dict[str, object]:
    """The age predicates for someone born on ``birth_date`` (``age_over_18``, ``age_over_21``).

    ``student``, ``pensioner`` and ``large_family`` are facts the issuer knows, not functions of a
    birth date: it adds them itself.
    """
    years = today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))
    return {"age_over_18": years >= 18, "age_over_21": years >= 21}


def _time(payload: Mapping[str, object], name: str, *, what: str, required: bool) -> float | None:
    value = payload.get(name)
    if value is None and not required and name not in payload:
        return None
    if type(value) is not int or not 0 <= value < _MAX_TIME:
        raise DecodeError(what, f"{name} is not a NumericDate (an integer)")
    return float(value)


def _text(value: object, *, what: str, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise DecodeError(what, f"{name} is not a short non-empty string")
    return value


@dataclass(frozen=True, slots=True)
class _IssuerPart:
    """The issuer JWT checked: signature, types; the disclosures given matched against ``_sd``."""

    jws: Jws
    issuer: PublicIdentity
    issuer_did: str
    vct: str
    holder: PublicIdentity
    issued_at: float
    not_before: float | None
    expires: float | None
    status: StatusRef | None
    claims: dict[str, object]
    disclosed: tuple[Disclosure, ...]


def _status_ref(value: object) -> StatusRef | None:
    if value is None:
        return None
    what = "credential status"
    if not isinstance(value, dict) or not isinstance(value.get("status_list"), dict):
        raise DecodeError(what, "status has no status_list")
    ref = value["status_list"]
    idx, uri = ref.get("idx"), ref.get("uri")
    if type(idx) is not int or not 0 <= idx < _MAX_TIME:
        raise DecodeError(what, "idx is not a non-negative integer")
    return StatusRef(uri=_text(uri, what=what, name="uri"), index=idx)


def _check_issuer_part(
    issuer_jwt: str,
    disclosures: tuple[str, ...],
    *,
    trusted: Mapping[str, str] | None,
    resolve: Callable[[str], PublicIdentity] = public_of_did,
) -> _IssuerPart:
    """Parse and check the issuer JWT, then match every disclosure to a digest it signed."""
    what = "issuer JWT"
    jws = parse_jws(issuer_jwt, what=what)
    if jws.header.get("typ") != ISSUER_TYP:
        raise DecodeError(what, f"typ is {jws.header.get('typ')!r}, not {ISSUER_TYP!r}")
    payload = jws.payload
    iss = payload.get("iss")
    if not isinstance(iss, str):
        raise DecodeError(what, "iss is not a string")
    if trusted is not None and iss not in trusted:
        raise UnknownIssuer(iss)
    try:
        issuer = resolve(iss)
    except DecodeError as exc:
        raise UnknownIssuer(iss) from exc
    verify_jws(jws, issuer, what="credential issuer signature")
    issued_at = _time(payload, "iat", what=what, required=True)
    assert issued_at is not None  # required=True
    not_before = _time(payload, "nbf", what=what, required=False)
    expires = _time(payload, "exp", what=what, required=False)
    vct = _text(payload.get("vct"), what=what, name="vct")
    cnf = payload.get("cnf")
    if not isinstance(cnf, dict) or "jwk" not in cnf:
        raise WrongHolder("the credential names no holder key (cnf.jwk)")
    holder = public_of_jwk(cnf["jwk"])
    status = _status_ref(payload.get("status"))
    if payload.get("_sd_alg", SD_ALG) != SD_ALG:
        raise DecodeError(what, f"_sd_alg is not {SD_ALG}")
    digests = set(parse_digest_list(payload.get("_sd", [])))
    claims: dict[str, object] = {}
    for name, value in payload.items():
        if name in RESERVED_CLAIMS:
            continue
        claims[name] = strip_undisclosed(value)
    seen: set[str] = set()
    disclosed: list[Disclosure] = []
    for text in disclosures:
        disclosure = parse_disclosure(text)
        if disclosure.digest not in digests:
            raise BadDisclosure(f"claim {disclosure.name!r}: no digest in the issuer JWT matches")
        if disclosure.digest in seen:
            raise BadDisclosure(f"claim {disclosure.name!r} is disclosed twice")
        if disclosure.name in RESERVED_CLAIMS or disclosure.name in claims:
            raise BadDisclosure(f"claim {disclosure.name!r} is reserved or disclosed twice")
        seen.add(disclosure.digest)
        claims[disclosure.name] = disclosure.value
        disclosed.append(disclosure)
    return _IssuerPart(
        jws=jws,
        issuer=issuer,
        issuer_did=iss,
        vct=vct,
        holder=holder,
        issued_at=issued_at,
        not_before=not_before,
        expires=expires,
        status=status,
        claims=claims,
        disclosed=tuple(disclosed),
    )


@dataclass(frozen=True, slots=True)
class Credential:
    """An issued SD-JWT (the holder's copy: issuer JWT + every disclosure), parsed and issuer-checked."""

    #: ``<issuer-jwt>~<disclosure>~...~`` exactly as issued.
    compact: str
    #: b64url sha-256 of the issuer JWT, first 22 characters (128 bits).
    credential_id: str
    #: The issuer's key and did.
    issuer: PublicIdentity
    issuer_did: str
    #: The credential type (``vct``), e.g. ``"age"`` or ``"https://example.org/id"``.
    vct: str
    #: Every claim (name -> JSON value).
    claims: dict[str, object]
    #: ``iat``, ``nbf``, ``exp`` (unix seconds).
    issued_at: float
    not_before: float | None
    expires: float | None
    #: The holder key (``cnf.jwk``) the KB-JWT must be signed with.
    holder: PublicIdentity
    #: Where its revocation bit lives, if it has one.
    status: StatusRef | None
    #: Claim name -> its disclosure text (what :func:`present` picks from).
    disclosures: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, compact: str) -> Credential:
        """Parse and check an issued SD-JWT (no KB-JWT allowed); every failure is a typed error."""
        parts = split_compact(compact)
        if parts.kb_jwt is not None:
            raise DecodeError("credential", "ends in a KB-JWT: that is a presentation, not a credential")
        checked = _check_issuer_part(parts.issuer_jwt, parts.disclosures, trusted=None)
        return cls(
            compact=compact,
            credential_id=digest_of(parts.issuer_jwt)[:22],
            issuer=checked.issuer,
            issuer_did=checked.issuer_did,
            vct=checked.vct,
            claims=checked.claims,
            issued_at=checked.issued_at,
            not_before=checked.not_before,
            expires=checked.expires,
            holder=checked.holder,
            status=checked.status,
            disclosures={d.name: d.text for d in checked.disclosed},
        )


def issue(
    issuer: Identity,
    *,
    holder: PublicIdentity,
    vct: str,
    claims: Mapping[str, object],
    now: float,
    valid_for: float | None = None,
    not_before: float | None = None,
    status: StatusRef | None = None,
    random_bytes: RandomBytes = os.urandom,
) -> Credential:
    """Sign a credential binding ``claims`` (all selectively disclosable) to ``holder``'s key."""
    if not claims or len(claims) > MAX_DISCLOSURES:
        raise ValueError(f"a credential has 1 to {MAX_DISCLOSURES} claims")
    reserved = sorted(set(claims) & RESERVED_CLAIMS)
    if reserved:
        raise ValueError(f"claims {reserved} are reserved for the credential's mechanics")
    if not all(isinstance(name, str) and 0 < len(name) <= MAX_CLAIM_NAME for name in claims):
        raise ValueError(f"claim names are non-empty strings of at most {MAX_CLAIM_NAME} characters")
    if any(has_sd_syntax(value) for value in claims.values()):
        raise ValueError("claim values cannot hold members named _sd, _sd_alg or ... (SD-JWT syntax)")
    if len(vct) > MAX_TEXT or not vct:
        raise ValueError(f"vct is a non-empty string of at most {MAX_TEXT} characters")
    disclosures = [make_disclosure(name, value, random_bytes) for name, value in claims.items()]
    digests = sorted([d.digest for d in disclosures] + decoy_digests(len(disclosures), random_bytes))
    payload: dict[str, object] = {"iss": did_key(issuer.public), "iat": int(now)}
    if not_before is not None:
        payload["nbf"] = int(not_before)
    if valid_for is not None:
        payload["exp"] = int(now + valid_for)
    payload["vct"] = vct
    payload["cnf"] = {"jwk": jwk_of(holder)}
    if status is not None:
        payload["status"] = {"status_list": {"idx": status.index, "uri": status.uri}}
    payload["_sd_alg"] = SD_ALG
    payload["_sd"] = digests
    issuer_jwt = sign_jws({"typ": ISSUER_TYP}, payload, issuer.sign)
    compact = join_compact(CompactParts(issuer_jwt, tuple(d.text for d in disclosures), None))
    return Credential.parse(compact)


def present(
    credential: Credential,
    holder_key: Identity,
    *,
    disclose: Collection[str],
    audience: str,
    nonce: str,
    now: float,
) -> str:
    """The presentation of the claims ``disclose`` answering the verifier's ``nonce`` and ``audience``."""
    if holder_key.public != credential.holder:
        raise WrongHolder("this key is not the one the credential is bound to")
    missing = sorted(set(disclose) - set(credential.claims))
    if missing:
        raise BadDisclosure(f"the credential has no claim {', '.join(map(repr, missing))}")
    if not audience or not nonce or len(audience) > MAX_TEXT or len(nonce) > MAX_TEXT:
        raise ValueError(f"audience and nonce are non-empty strings of at most {MAX_TEXT} characters")
    wanted = set(disclose)
    parts = split_compact(credential.compact)
    chosen = tuple(d for name, d in credential.disclosures.items() if name in wanted)
    kb = {"iat": int(now), "aud": audience, "nonce": nonce, "sd_hash": sd_hash(parts.issuer_jwt, chosen)}
    kb_jwt = sign_jws({"typ": KB_TYP}, kb, holder_key.sign)
    return join_compact(CompactParts(parts.issuer_jwt, chosen, kb_jwt))


def present_one_way(
    credential: Credential,
    holder_key: Identity,
    *,
    disclose: Collection[str],
    now: float,
    audience: str = ONE_WAY_AUDIENCE,
    random_bytes: RandomBytes = os.urandom,
) -> str:
    """A presentation a till accepts for ``ONE_WAY_WINDOW`` seconds without sending a challenge."""
    nonce = b64url_encode(random_bytes(NONCE_SIZE))
    return present(credential, holder_key, disclose=disclose, audience=audience, nonce=nonce, now=now)


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verifier learnt from a presentation that passed every check."""

    #: The credential's id (b64url sha-256 of its issuer JWT, 22 characters).
    credential_id: str
    #: Who issued it, and the name the verifier trusts it under (None when any issuer is accepted).
    issuer: PublicIdentity
    issuer_did: str
    issuer_name: str | None
    #: The credential type.
    vct: str
    #: The disclosed claims only (plus any claim the issuer made always visible).
    claims: dict[str, object]
    #: The holder key the presentation was signed with (per credential, not the messenger identity).
    holder: PublicIdentity
    #: ``iat`` and ``exp`` of the credential.
    issued_at: float
    expires: float | None
    #: ``iat`` of the KB-JWT: when the holder made this presentation.
    presented_at: float
    #: ``"valid"`` (checked against a status list) or ``"unchecked"`` (no status reference, or no list
    #: and the verifier does not require one).
    status: str
    #: Age of the status list used, seconds (None when unchecked).
    status_age: float | None


class Verifier:
    """Checks presentations offline: issuer, disclosures, holder binding, challenge or window, status."""

    def __init__(
        self,
        *,
        audience: str,
        trusted: Mapping[str, str] | None = None,
        status: StatusCache | None = None,
        max_status_age: float = 7 * 86400,
        window: float = ONE_WAY_WINDOW,
        require_status: bool = True,
    ) -> None:
        """``trusted``: issuer did -> display name (None: any issuer, reported by did)."""
        self.audience = audience
        self.trusted = None if trusted is None else dict(trusted)
        self.status = status
        self.max_status_age = max_status_age
        self.window = window
        self.require_status = require_status
        self._challenges: OrderedDict[str, float | None] = OrderedDict()
        self._answered: OrderedDict[str, float] = OrderedDict()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._issuer_keys: OrderedDict[str, PublicIdentity] = OrderedDict()
        #: Counters: presentations accepted, refused by error class name, replay entries evicted early.
        self.counts: dict[str, int] = {}

    def challenge(self, random_bytes: RandomBytes = os.urandom, *, now: float | None = None) -> str:
        """A fresh nonce for the holder: accepted once, for ``CHALLENGE_LIFETIME`` s if ``now`` is given."""
        nonce = b64url_encode(random_bytes(NONCE_SIZE))
        self._challenges[nonce] = now
        while len(self._challenges) > MAX_CHALLENGES:
            self._challenges.popitem(last=False)
        return nonce

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def verify(
        self, presentation: str, *, now: float, nonce: str | None = None, require: Collection[str] = ()
    ) -> Verified:
        """Check ``presentation``; ``nonce`` None means one-way (window) mode. Raises a typed error."""
        try:
            result = self._verify(presentation, now=now, nonce=nonce, require=require)
        except (CredentialError, DecodeError, BadSignature) as exc:
            self._count(type(exc).__name__)
            raise
        self._count("accepted")
        return result

    def _verify(
        self, presentation: str, *, now: float, nonce: str | None, require: Collection[str]
    ) -> Verified:
        parts = split_compact(presentation)
        checked = _check_issuer_part(
            parts.issuer_jwt, parts.disclosures, trusted=self.trusted, resolve=self._issuer_key
        )
        if parts.kb_jwt is None:
            raise WrongHolder("the presentation has no key binding JWT")
        kb = parse_jws(parts.kb_jwt, what="KB-JWT")
        if kb.header.get("typ") != KB_TYP:
            raise DecodeError("KB-JWT", f"typ is not {KB_TYP}")
        try:
            verify_jws(kb, checked.holder, what="KB-JWT")
        except BadSignature as exc:
            raise WrongHolder("the KB-JWT is not signed by the key the credential names") from exc
        presented_at = _time(kb.payload, "iat", what="KB-JWT", required=True)
        assert presented_at is not None  # required=True
        aud = _text(kb.payload.get("aud"), what="KB-JWT", name="aud")
        kb_nonce = _text(kb.payload.get("nonce"), what="KB-JWT", name="nonce")
        if kb.payload.get("sd_hash") != sd_hash(parts.issuer_jwt, parts.disclosures):
            raise BadDisclosure("sd_hash does not match the disclosures presented")
        replay_key = digest_of(parts.kb_jwt)
        if nonce is not None:
            if kb_nonce != nonce:
                raise ChallengeMismatch("it answers another nonce")
            if aud != self.audience:
                raise ChallengeMismatch(f"it is addressed to {aud!r}, not {self.audience!r}")
            self._check_challenge(nonce, presented_at, now=now)
        else:
            if aud not in (self.audience, ONE_WAY_AUDIENCE):
                raise ChallengeMismatch(f"it is addressed to {aud!r}, not {self.audience!r}")
            if not now - self.window - CLOCK_SKEW <= presented_at <= now + CLOCK_SKEW:
                raise PresentationExpired(issued_at=presented_at, now=now, window=self.window)
            self._forget_seen(now)
            if replay_key in self._seen:
                raise PresentationReplayed()
        if (checked.not_before is not None and now < checked.not_before) or (
            checked.expires is not None and now >= checked.expires
        ):
            raise CredentialNotValid(not_before=checked.not_before, expires=checked.expires, now=now)
        status, status_age = self._check_status(checked, now=now)
        missing = sorted(set(require) - set(checked.claims))
        if missing:
            raise CredentialError(f"the presentation does not disclose {', '.join(missing)}")
        # Every check passed: only now is the presentation remembered (one-way) or the nonce used up.
        if nonce is None:
            self._remember_seen(replay_key, presented_at + self.window + CLOCK_SKEW)
        else:
            self._challenges.pop(nonce, None)
            self._answered[nonce] = now + CHALLENGE_LIFETIME
            while len(self._answered) > MAX_CHALLENGES:
                self._answered.popitem(last=False)
        return Verified(
            credential_id=digest_of(parts.issuer_jwt)[:22],
            issuer=checked.issuer,
            issuer_did=checked.issuer_did,
            issuer_name=None if self.trusted is None else self.trusted.get(checked.issuer_did),
            vct=checked.vct,
            claims=checked.claims,
            holder=checked.holder,
            issued_at=checked.issued_at,
            expires=checked.expires,
            presented_at=presented_at,
            status=status,
            status_age=status_age,
        )

    def _issuer_key(self, did: str) -> PublicIdentity:
        """``public_of_did``, remembered for the last ``MAX_ISSUER_KEYS`` issuers."""
        key = self._issuer_keys.pop(did, None)
        if key is None:
            key = public_of_did(did)
            while len(self._issuer_keys) >= MAX_ISSUER_KEYS:
                self._issuer_keys.popitem(last=False)
        self._issuer_keys[did] = key  # most recently used last
        return key

    def _check_challenge(self, nonce: str, presented_at: float, *, now: float) -> None:
        """Any nonce is answered once here; one this verifier made lives ``CHALLENGE_LIFETIME`` s."""
        while self._answered and next(iter(self._answered.values())) <= now:
            self._answered.popitem(last=False)  # past its lifetime the iat check refuses it anyway
        if nonce in self._answered:
            raise PresentationReplayed()
        made = self._challenges.get(nonce)
        if made is not None and now - made > CHALLENGE_LIFETIME:
            raise PresentationExpired(issued_at=made, now=now, window=CHALLENGE_LIFETIME)
        if not now - CHALLENGE_LIFETIME - CLOCK_SKEW <= presented_at <= now + CLOCK_SKEW:
            raise PresentationExpired(issued_at=presented_at, now=now, window=CHALLENGE_LIFETIME)

    def _forget_seen(self, now: float) -> None:
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[key]

    def _remember_seen(self, key: str, until: float) -> None:
        self._seen[key] = until
        while len(self._seen) > MAX_REPLAY_ENTRIES:
            self._seen.popitem(last=False)
            self._count("replay_evicted")

    def _check_status(self, checked: _IssuerPart, *, now: float) -> tuple[str, float | None]:
        ref = checked.status
        if ref is None:
            return "unchecked", None
        found = None if self.status is None else self.status.lookup(ref, checked.issuer_did, now=now)
        if found is not None and found[0]:
            raise CredentialRevoked(issuer=checked.issuer_did, index=ref.index, list_age=found[1])
        if found is None or found[1] > self.max_status_age:
            if self.require_status:
                age = None if found is None else found[1]
                raise StatusUnknown(issuer=checked.issuer_did, list_age=age, max_age=self.max_status_age)
            return "unchecked", None
        return "valid", found[1]
