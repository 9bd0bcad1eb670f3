"""File names from strangers made safe to write: a received file lands in the downloads folder and
nowhere else, under a name that shows what it is.

A sender picks the name in the manifest, and a hostile one picks ``../../.bashrc``, ``a\\x00b``,
``invoice\\u202efdp.exe`` (shown as "invoiceexe.pdf" by a right-to-left override), ``CON`` or 300
bytes of emoji. ``safe_name`` keeps the last path component only, drops control and format characters
(Unicode categories Cc and Cf: NUL, escapes, bidi overrides, zero-width marks), leading dots and
trailing dots and spaces, prefixes names Windows reserves, and shortens to ``MAX_SAFE_BYTES`` keeping
the extension. The result has no separator, so ``folder / safe_name(x)`` is always inside ``folder``.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Final

__all__ = ["MAX_SAFE_BYTES", "claim_path", "safe_name"]

#: Bytes of a written name: under the 255 of common file systems, with room for " (12)".
MAX_SAFE_BYTES: Final = 200
#: Names Windows reserves whatever the extension (a file shared with a Windows machine later).
_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)
#: A name that is nothing after cleaning.
_FALLBACK: Final = "file"
#: Attempts at "name (n).ext" before giving up (a folder with 10,000 copies of one name).
_MAX_COPIES: Final = 10_000


def safe_name(name: str) -> str:
    """A name safe to create in a folder, as close to ``name`` as that allows."""
    name = unicodedata.normalize("NFC", name.encode("utf-8", "replace").decode("utf-8", "replace"))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Zl", "Zp"})
    name = name.strip().lstrip(".").rstrip(". ")
    if not name:
        return _FALLBACK
    _stem, dot, ext = name.rpartition(".")
    if not dot:
        ext = ""
    if name.partition(".")[0].rstrip(" ").upper() in _RESERVED:
        name = "_" + name
    return _shorten(name, ext)


def _shorten(name: str, ext: str) -> str:
    if len(name.encode("utf-8")) <= MAX_SAFE_BYTES:
        return name
    suffix = "." + ext if ext and len(ext.encode("utf-8")) <= 16 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    budget = MAX_SAFE_BYTES - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
    return (cut or _FALLBACK) + suffix


def claim_path(folder: Path, name: str) -> Path:
    """Create an empty file for ``safe_name(name)`` in ``folder`` (``name (1).ext`` and so on if taken)
    and return its path: the claim is atomic (``O_EXCL``), so two downloads never get one name."""
    safe = safe_name(name)
    stem, dot, ext = safe.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = safe, "", ""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(_MAX_COPIES):
        candidate = folder / (safe if copy == 0 else f"{stem} ({copy}){dot}{ext}")
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"{_MAX_COPIES} files named like {safe} in {folder}")
