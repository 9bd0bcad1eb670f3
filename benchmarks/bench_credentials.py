"""Credential verification speed against one raw Ed25519 verify, and the size of an age check's QR code.

Run: python benchmarks/bench_credentials.py [--seconds S]   (about 15 s)

One run measures:

- ``Verifier.verify`` of a challenge-mode presentation of an ID credential (6 claims) disclosing 3
  claims, with a status list in the cache: two Ed25519 verifies (issuer, holder), three disclosure
  digests, the sd_hash, JSON parsing and every strict check. A verifier accepts a nonce once, so
  each call gets a fresh nonce and presentation, made ahead of the timing; one verifier serves all
  (as a till does: it keeps the issuer's key resolved, and checks each new holder key's point).
- the baseline: one ``PublicIdentity.verify`` of a 64-byte message (libsodium's Ed25519), in the same
  run. A verification needs two of those, so a ratio near 0.5 means the rest costs nothing; below it
  is the price of JSON and checks in Python.
- the QR payload of a one-way age check (``vct`` "age" with age_over_18 and age_over_21, a status
  entry, age_over_18 disclosed): characters, and the QR version at error correction level M.

Rounds alternate between the two timed cases; each side's best round counts. Last line:
``verify_per_s=… ratio_vs_ed25519=… age_qr_bytes=…`` (the ratio is verify rate / Ed25519 rate).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import date

from meshchat.credentials import (
    StatusCache,
    StatusList,
    Verifier,
    holder_key,
    issue,
    predicates_for,
    present,
    present_one_way,
    qr_code,
    status_uri,
    to_qr_text,
)
from meshchat.identity import Identity
from meshchat.wire.jose import did_key

NOW = 1_780_000_000.0
ROUNDS = 5
#: Verifications timed per round (each of a distinct presentation, made ahead of the timing).
BATCH = 3000
#: Holders (credentials, holder keys) the presentations come from.
HOLDERS = 100


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``work`` over about ``seconds`` (at least 50 calls)."""
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while calls < 50 or time.perf_counter() < deadline:
        for _ in range(50):
            work()
        calls += 50
    return calls / (time.perf_counter() - start)


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of Ed25519 verifies per round")
    args = parser.parse_args()

    issuer = Identity(bytes([1]) * 32)
    holder = holder_key(bytes([2]) * 32, bytes(16))
    statuses = StatusList(status_uri(did_key(issuer.public), "main"))
    cache = StatusCache()
    claims = {
        "given_name": "Timur",
        "family_name": "Galiev",
        "birth_date": "1990-07-21",
        "document_number": "9214 556677",
        "nationality": "RU",
        "address": {"city": "Kazan", "street": "Kremlyovskaya 18"},
    }
    credential = issue(
        issuer,
        holder=holder.public,
        vct="id",
        claims=claims,
        now=NOW,
        valid_for=86400,
        status=statuses.allocate(),
    )
    cache.put(statuses.token(issuer, now=NOW), now=NOW)
    disclose = ["given_name", "family_name", "document_number"]
    text = present(credential, holder, disclose=disclose, audience="hotel", nonce="n", now=NOW)
    verifier = Verifier(audience="hotel", trusted={did_key(issuer.public): "office"}, status=cache)
    assert verifier.verify(text, now=NOW, nonce="n").claims == {name: claims[name] for name in disclose}

    message, signature = bytes(64), issuer.sign(bytes(64))
    public = issuer.public

    # Distinct presentations, each answering its own nonce, from HOLDERS holders (as at a desk).
    held = []
    for i in range(HOLDERS):
        key = holder_key(bytes([2]) * 32, i.to_bytes(16, "big"))
        held.append(
            (issue(issuer, holder=key.public, vct="id", claims=claims, now=NOW, valid_for=86400), key)
        )
    samples = []
    for i in range(BATCH * ROUNDS):
        mine, key = held[i % HOLDERS]
        samples.append(
            (present(mine, key, disclose=disclose, audience="hotel", nonce=f"n{i}", now=NOW), f"n{i}")
        )
    queue = iter(samples)

    def verify_batch() -> float:
        start = time.perf_counter()
        for _ in range(BATCH):
            sample, nonce = next(queue)
            verifier.verify(sample, now=NOW, nonce=nonce)
        return BATCH / (time.perf_counter() - start)

    def verify_ed25519() -> None:
        public.verify(message, signature)

    best_verify = best_ed = 0.0
    ratios = []
    for _ in range(ROUNDS):
        v = verify_batch()
        e = rate(verify_ed25519, args.seconds)
        best_verify, best_ed = max(best_verify, v), max(best_ed, e)
        ratios.append(v / e)
    ratios.sort()
    print(f"presentation verify (3 of 6 claims disclosed, status checked): {best_verify:,.0f}/s")
    print(f"Ed25519 verify (PublicIdentity.verify, 64-byte message):      {best_ed:,.0f}/s")
    ratio = best_verify / best_ed
    print(f"ratio of best rounds {ratio:.3f}; median per-round ratio {ratios[len(ratios) // 2]:.3f}")
    print(f"presentation text: {len(text)} characters")

    age = issue(
        issuer,
        holder=holder.public,
        vct="age",
        claims=predicates_for(date(2001, 4, 12), date(2026, 12, 5)),
        now=NOW,
        valid_for=365 * 86400,
        status=statuses.allocate(),
    )
    one_way = present_one_way(age, holder, disclose=["age_over_18"], now=NOW)
    payload = to_qr_text(one_way)
    code = qr_code(one_way)
    print(f"age check: compact {len(one_way)} characters, QR payload {len(payload)} characters")
    print(f"age check QR: version {code.version}, error level {code.error}, mode {code.mode}")
    print(f"verify_per_s={best_verify:.0f} ratio_vs_ed25519={ratio:.3f} age_qr_bytes={len(payload)}")


if __name__ == "__main__":
    main()
