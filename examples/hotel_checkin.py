"""Hotel check-in without paper: the guest discloses name and document number, nothing else.

Run: python examples/hotel_checkin.py

A passport office issues Timur an ID credential (given name, family name, birth date, document
number, nationality, address). At the desk the hotel shows a challenge (a nonce, say as a QR code);
his phone answers with a presentation bound to that nonce and the hotel's name, disclosing the three
claims the register needs. The hotel checks it offline. Replaying the answer, or answering another
hotel's challenge with it, fails.
"""

from __future__ import annotations

import os
import time

from meshchat.credentials import KEY_ID_SIZE, Verifier, holder_key, issue, present
from meshchat.errors import ChallengeMismatch, PresentationReplayed
from meshchat.identity import Identity
from meshchat.wire.jose import did_key

ID_CLAIMS = {
    "given_name": "Timur",
    "family_name": "Galiev",
    "birth_date": "1990-07-21",
    "document_number": "9214 556677",
    "nationality": "RU",
    "address": {"city": "Kazan", "street": "Kremlyovskaya 18"},
}


def main() -> None:
    """Issue an ID, answer the hotel's challenge, verify; print what the hotel learns."""
    now = time.time()
    office, timur = Identity.generate(), Identity.generate()
    timur_key = holder_key(timur.seed, os.urandom(KEY_ID_SIZE))
    credential = issue(
        office, holder=timur_key.public, vct="id", claims=ID_CLAIMS, now=now, valid_for=10 * 365 * 86400
    )
    print(f"passport office issued an ID credential with {len(credential.claims)} claims")

    # The hotel trusts the passport office. This example's credential has no revocation entry.
    hotel = Verifier(audience="Hotel Tatarstan", trusted={did_key(office.public): "Passport office"})
    nonce = hotel.challenge(now=now)
    print(f"hotel's challenge: {nonce}")

    # Timur's phone answers, disclosing only what the register needs.
    wanted = ["given_name", "family_name", "document_number"]
    answer = present(
        credential, timur_key, disclose=wanted, audience="Hotel Tatarstan", nonce=nonce, now=now + 5
    )
    print(f"phone answers with {len(answer)} characters")

    seen = hotel.verify(answer, now=now + 6, nonce=nonce, require=wanted)
    print(f"hotel learnt: {seen.claims}")
    print(f"  issued by {seen.issuer_name}; status {seen.status}")
    assert set(seen.claims) == set(wanted)

    # The same answer again (a replay), and for another hotel's challenge: both refused.
    try:
        hotel.verify(answer, now=now + 7, nonce=nonce)
    except PresentationReplayed as exc:
        print(f"replayed answer: refused ({exc})")
    other = Verifier(audience="Hotel Volga")
    try:
        other.verify(answer, now=now + 7, nonce=other.challenge(now=now))
    except ChallengeMismatch as exc:
        print(f"shown to another hotel: refused ({exc})")


if __name__ == "__main__":
    main()
