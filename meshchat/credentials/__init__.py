"""Credentials with selective disclosure: SD-JWT (RFC 9901) issuance, presentation, verification, status lists."""
