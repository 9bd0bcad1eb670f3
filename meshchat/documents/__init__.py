"""Signed documents: detached EdDSA signatures, co-signing rounds with an M-of-N rule, witnesses."""
