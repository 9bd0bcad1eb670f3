"""What a running node keeps in its profile folder besides the key and the store: the lock that lets
one node at a time run on a profile, and the addresses it can be dialled at (for invites).

Light on purpose (no py-libp2p, no crypto at import): the CLI checks the lock before it asks for a
passphrase, and reads the addresses for ``meshchat invite``, without loading the network stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshchat.errors import ProfileError, ProfileLocked

__all__ = [
    "ADDRESSES_FILE",
    "LOCK_FILE",
    "ProfileHolder",
    "check_profile_free",
    "hold_profile",
    "profile_holder",
    "write_addresses",
]

#: The lock a running node holds on its profile folder (an exclusive ``flock``; the file holds its PID).
LOCK_FILE = "lock"
#: Where a running node writes the addresses it can be dialled at:
#: ``{"addrs": ["/ip4/.../tcp/.../p2p/12D3Koo...", ...], "written_at": <unix seconds>}``.
ADDRESSES_FILE = "addresses.json"
#: Most bytes of the lock file read for the holder's PID (a PID and a newline).
MAX_LOCK_FILE = 32


@dataclass(frozen=True, slots=True)
class ProfileHolder:
    """A process that runs a node on a profile now."""

    #: Its PID, as it wrote it in the lock file (None if unreadable).
    pid: int | None


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, MAX_LOCK_FILE, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def hold_profile(profile: Path) -> Iterator[None]:
    """Hold ``profile/lock`` (an exclusive ``flock``, released when the process ends, however it
    ends); the file holds our PID so a second opener can name us. ``ProfileLocked`` if held."""
    path = profile / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ProfileError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProfileLocked(path=str(profile), pid=_pid_in(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next opener)


def profile_holder(profile: Path) -> ProfileHolder | None:
    """Who runs a node on ``profile`` now (None: nobody): tries the same ``flock`` without waiting and
    lets it go at once. No lock file: no node ever ran here."""
    path = profile / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProfileError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return ProfileHolder(pid=_pid_in(fd))
    finally:
        os.close(fd)  # releases the lock if we took it
    return None


def check_profile_free(profile: Path) -> None:
    """``ProfileLocked`` (naming the holder's PID) if a node runs on ``profile`` now.

    Commands that open a node call this before asking for the passphrase, so nobody types one only to
    be told the profile is busy (the node takes the lock for real when it opens: a race between the
    two is still refused there, only after the passphrase).
    """
    holder = profile_holder(profile)
    if holder is not None:
        raise ProfileLocked(path=str(profile), pid=holder.pid)


def write_addresses(profile: Path, addrs: Sequence[str], *, written_at: float) -> None:
    """Record ``addrs`` in ``profile/addresses.json``, atomically; ``ProfileError`` if it cannot."""
    from meshchat.identity import replace_atomically  # noqa: PLC0415 (keeps this module's import light)

    data = {"addrs": list(addrs), "written_at": int(written_at)}
    path = profile / ADDRESSES_FILE
    try:
        replace_atomically(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot write {path}: {exc.strerror or exc}") from exc
