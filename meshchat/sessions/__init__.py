"""1:1 sessions: X3DH-style set-up from signed prekey bundles (with an ML-KEM-768 hybrid) and the Double
Ratchet with header encryption. Sans-IO: wall time and randomness come from the caller."""
