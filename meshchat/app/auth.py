"""Tokens that let one local user, and no other local user or web site, drive a profile's node.

A token is 32 random bytes (URL-safe base64), new for every run of ``meshchat app`` or ``meshchat
daemon``; the daemon writes it to ``<profile>/daemon.token`` (mode 0600, so only the profile's owner can
read it) for its clients. Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from meshchat.errors import ProfileError
from meshchat.identity import replace_atomically

__all__ = ["TOKEN_BYTES", "TOKEN_FILE", "check_token", "new_token", "read_token", "write_token"]

#: Random bytes in a token.
TOKEN_BYTES = 32
#: The daemon's token file inside a profile folder.
TOKEN_FILE = "daemon.token"


def new_token() -> str:
    """A fresh random token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_token(given: str | None, expected: str) -> bool:
    """Whether ``given`` is ``expected`` (constant time; None is never)."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def write_token(profile: Path, token: str) -> Path:
    """Write ``token`` to the profile's token file (0600, atomically) and return its path."""
    path = profile / TOKEN_FILE
    try:
        replace_atomically(path, (token + "\n").encode("ascii"))
        path.chmod(0o600)
    except OSError as exc:
        raise ProfileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def read_token(profile: Path) -> str:
    """The token a running daemon wrote to ``profile`` (``ProfileError`` if there is none)."""
    path = profile / TOKEN_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read {path}: is `meshchat daemon` running? ({exc})") from exc
