"""18+ at the till, offline: the till learns "over 18" and nothing else.

Run: python examples/age_check.py

A registry issues Alisa an "age" credential holding only predicates it computed from her birth date
(age_over_18, age_over_21): the birth date itself never enters the credential. At the till her phone
shows a QR code with a one-way presentation of age_over_18 alone (the till sends no challenge; the
presentation is good for 60 s and refused if shown twice at the same till). The till checks it
without any network: the registry's signature, that the phone holds the credential's key, the time
window, the registry's revocation list it cached earlier.
"""

from __future__ import annotations

import os
import time
from datetime import date

from meshchat.credentials import (
    KEY_ID_SIZE,
    StatusCache,
    StatusList,
    Verifier,
    from_qr_text,
    holder_key,
    issue,
    predicates_for,
    present_one_way,
    qr_code,
    status_uri,
    to_qr_text,
)
from meshchat.credentials.sdjwt import parse_disclosure, split_compact
from meshchat.errors import PresentationReplayed
from meshchat.identity import Identity
from meshchat.wire.jose import did_key


def main() -> None:
    """Issue, present at the till, verify; print what each side knows."""
    now = time.time()
    registry, alisa = Identity.generate(), Identity.generate()
    registry_did = did_key(registry.public)

    # Alisa's phone derives a key for this one credential from her identity seed: the till never
    # sees her messenger identity, and her other credentials carry unrelated keys.
    key_id = os.urandom(KEY_ID_SIZE)
    alisa_key = holder_key(alisa.seed, key_id)

    # The registry knows her birth date; it signs only the predicates, and gives the credential an
    # entry (at a random index) in its revocation list.
    revocations = StatusList(status_uri(registry_did, "age"))
    predicates = predicates_for(date(2001, 4, 12), date.today())
    credential = issue(
        registry,
        holder=alisa_key.public,
        vct="age",
        claims=predicates,
        now=now,
        valid_for=365 * 86400,
        status=revocations.allocate(),
    )
    print(f"registry issued an 'age' credential with {sorted(credential.claims)}")

    # The till trusts the registry and cached its signed revocation list (it came over gossip).
    statuses = StatusCache()
    statuses.put(revocations.token(registry, now=now - 120), now=now)
    till = Verifier(audience="till-7", trusted={registry_did: "Civil registry"}, status=statuses)

    # Alisa's phone: a one-way presentation of age_over_18 only, as QR text.
    presentation = present_one_way(credential, alisa_key, disclose=["age_over_18"], now=now)
    payload = to_qr_text(presentation)
    version = qr_code(presentation).version
    print(f"phone shows a QR code: {len(payload)} characters, version {version} at level M")

    # The till scans it and checks everything offline.
    scanned = from_qr_text(payload)
    seen = till.verify(scanned, now=now + 3)
    # Everything the till received, decoded: the disclosures carry one claim, the rest is digests,
    # keys and signatures.
    disclosures = [parse_disclosure(text) for text in split_compact(scanned).disclosures]
    print(f"disclosures in the QR: {[(d.name, d.value) for d in disclosures]}")
    print(f"till learnt: {seen.claims}")
    print(f"  issued by {seen.issuer_name}, credential type {seen.vct!r}")
    print(f"  revocation status: {seen.status} (list {seen.status_age:.0f} s old)")
    print(f"  presented at {seen.presented_at:.0f} (unix time), accepted for 60 s")
    assert seen.claims == {"age_over_18": True}

    # Someone photographs the QR and shows it again at the same till: refused.
    try:
        till.verify(from_qr_text(payload), now=now + 10)
    except PresentationReplayed as exc:
        print(f"same QR again at this till: refused ({exc})")


if __name__ == "__main__":
    main()
