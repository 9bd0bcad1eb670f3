"""Key files: an identity's secret seed at rest, encrypted under a passphrase.

Layout: the magic ``MCKEY``, one version byte, then a msgpack map with integer keys::

    1: kdf (0 = none, 1 = argon2id)   2: opslimit   3: memlimit   4: salt (16)
    5: nonce (24)                     6: public key (32)          7: sealed seed (32 + 16)

The seed is sealed with XChaCha20-Poly1305 under a key derived by argon2id from the passphrase; the
header and every other field are the AEAD's associated data, so changing the KDF parameters or swapping
the public key makes decryption fail instead of silently loading a different key. The public key sits
in clear so ``meshchat id`` can show who a profile is without asking for the passphrase.

Files are written atomically (temporary file, fsync, rename, fsync of the folder) with mode 0600, and a
file that group or other users may read is refused on load, as OpenSSH refuses such private keys.
Argon2id parameters read from a file are capped (1 GiB, 8 passes: twice libsodium's "sensitive" preset
at most), so a crafted file cannot make a load take more memory or time than a strong real one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import msgpack
import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils
from nacl.pwhash import argon2id

from meshchat.errors import KeyFileError, KeyFileProblem
from meshchat.identity.keys import SEED_SIZE, Identity, RandomBytes

__all__ = [
    "KEY_FILE_VERSION",
    "KdfLimits",
    "is_encrypted",
    "load_identity",
    "read_public_key",
    "save_identity",
]

_MAGIC = b"MCKEY"
#: The key file format version this module writes and reads.
KEY_FILE_VERSION = 1
#: The key file's name inside a profile folder.
KEY_FILE_NAME = "identity.key"
#: A key file is a few hundred bytes; anything much larger is not one of ours.
MAX_KEY_FILE_SIZE = 4096
#: Largest argon2id memory a key file may ask for: libsodium's "sensitive" preset (1 GiB).
MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE
#: Largest argon2id pass count a key file may ask for: twice libsodium's "sensitive" preset (4).
MAX_OPSLIMIT = 8

_KDF_NONE = 0
_KDF_ARGON2ID = 1
_NONCE_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_SEALED_SEED_SIZE = SEED_SIZE + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_K_KDF, _K_OPS, _K_MEM, _K_SALT, _K_NONCE, _K_PUBLIC, _K_SEED = range(1, 8)


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """Cost of deriving the file key from the passphrase (argon2id); the defaults take ~0.1-0.3 s."""

    #: Number of argon2id passes.
    opslimit: int = argon2id.OPSLIMIT_INTERACTIVE
    #: Memory argon2id uses, bytes.
    memlimit: int = argon2id.MEMLIMIT_INTERACTIVE


def _normalise(passphrase: str) -> bytes:
    # The same passphrase typed on two keyboards may arrive in different Unicode forms.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    return bytes(
        argon2id.kdf(
            sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
            _normalise(passphrase),
            salt,
            opslimit=limits.opslimit,
            memlimit=limits.memlimit,
        )
    )


def _header_and_aad(fields: dict[int, object]) -> bytes:
    aad_fields = {k: v for k, v in fields.items() if k != _K_SEED}
    packed: bytes = msgpack.packb(aad_fields)
    return _MAGIC + bytes([KEY_FILE_VERSION]) + packed


def save_identity(
    path: Path,
    identity: Identity,
    passphrase: str | None,
    *,
    limits: KdfLimits | None = None,
    overwrite: bool = False,
    random_bytes: RandomBytes = nacl.utils.random,
) -> None:
    """Write ``identity`` to ``path`` atomically, mode 0600, sealed under ``passphrase``.

    ``passphrase=None`` stores the seed unencrypted (protected by file permissions only). Refuses to
    replace an existing file unless ``overwrite`` is true. Raises ``KeyFileError`` on any I/O failure,
    in which case the previous file, if any, is untouched.
    """
    path = Path(path)
    if passphrase == "":
        raise ValueError("an empty passphrase protects nothing; pass None to store the key unencrypted")
    fields: dict[int, object] = {_K_KDF: _KDF_NONE, _K_PUBLIC: identity.public.ed25519}
    if passphrase is None:
        fields[_K_SEED] = identity.seed
    else:
        limits = limits or KdfLimits()
        salt = random_bytes(argon2id.SALTBYTES)
        nonce = random_bytes(_NONCE_SIZE)
        fields.update(
            {_K_KDF: _KDF_ARGON2ID, _K_OPS: limits.opslimit, _K_MEM: limits.memlimit, _K_SALT: salt}
        )
        fields[_K_NONCE] = nonce
        key = _derive(passphrase, salt, limits)
        fields[_K_SEED] = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            identity.seed, _header_and_aad(fields), nonce, key
        )
    data = _MAGIC + bytes([KEY_FILE_VERSION]) + msgpack.packb(fields)
    _write_atomically(path, data, random_bytes, overwrite=overwrite)


def _write_atomically(path: Path, data: bytes, random_bytes: RandomBytes, *, overwrite: bool) -> None:
    tmp = path.with_name(f".{path.name}.{random_bytes(6).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                _link_exclusively(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        if os.name == "posix":
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. the parent is a file: there is no temp file to remove
            tmp.unlink()
        raise KeyFileError(path=str(path), problem=KeyFileProblem.IO, detail=f"cannot write: {exc}") from exc


def replace_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a reader, or a crash, sees the old file or the new one, never
    half of one: a temporary file beside it, fsync, rename over it, fsync of the folder. Raises OSError.

    For small profile files (names, contacts); key files add exclusive creation on top (``save_identity``).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _link_exclusively(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that name exists; ``KeyFileError(EXISTS)`` if it does."""
    exists = KeyFileError(
        path=str(path), problem=KeyFileProblem.EXISTS, detail="already exists; not replaced"
    )
    try:
        # link() fails if the name exists, even if it appeared a moment ago: never a silent replace.
        os.link(tmp, path)
    except FileExistsError as exc:
        raise exists from exc
    except OSError:
        # No hard links here (FAT, some network mounts): check, then rename; a narrow race remains.
        if path.exists():
            raise exists from None
        os.replace(tmp, path)


def _read_fields(path: Path) -> dict[int, object]:
    """Read, permission-check and structurally validate a key file; no passphrase needed."""
    where = str(path)
    try:
        st = os.stat(path)
        if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            mode = stat.S_IMODE(st.st_mode)
            raise KeyFileError(
                path=where,
                problem=KeyFileProblem.INSECURE_PERMISSIONS,
                detail=f"other users may read it (mode {mode:04o}); run: chmod 600 {where}",
            )
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_SIZE + 1)
    except FileNotFoundError as exc:
        raise KeyFileError(path=where, problem=KeyFileProblem.MISSING, detail="does not exist") from exc
    except OSError as exc:
        raise KeyFileError(path=where, problem=KeyFileProblem.IO, detail=f"cannot read: {exc}") from exc

    def corrupt(why: str) -> KeyFileError:
        return KeyFileError(
            path=where, problem=KeyFileProblem.CORRUPT, detail=f"truncated or corrupt ({why})"
        )

    if len(data) > MAX_KEY_FILE_SIZE:
        raise corrupt(f"larger than {MAX_KEY_FILE_SIZE} bytes")
    if len(data) < len(_MAGIC) + 1 or not data.startswith(_MAGIC):
        raise corrupt("not a meshchat key file")
    version = data[len(_MAGIC)]
    if version != KEY_FILE_VERSION:
        raise KeyFileError(
            path=where,
            problem=KeyFileProblem.UNKNOWN_VERSION,
            detail=f"format version {version}; this meshchat reads version {KEY_FILE_VERSION}",
        )
    try:
        fields = msgpack.unpackb(data[len(_MAGIC) + 1 :], strict_map_key=False, max_bin_len=1024)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise corrupt("cannot parse") from exc
    if not isinstance(fields, dict):
        raise corrupt("not a map")
    expected = {_K_KDF: int, _K_PUBLIC: bytes, _K_SEED: bytes}
    if fields.get(_K_KDF) == _KDF_ARGON2ID:
        expected.update({_K_OPS: int, _K_MEM: int, _K_SALT: bytes, _K_NONCE: bytes})
    if set(fields) != set(expected):
        raise corrupt("unexpected or missing fields")
    for key, kind in expected.items():
        if type(fields[key]) is not kind:
            raise corrupt(f"field {key} has the wrong type")
    if fields[_K_KDF] not in (_KDF_NONE, _KDF_ARGON2ID):
        raise corrupt(f"unknown key derivation {fields[_K_KDF]}")
    return fields


def read_public_key(path: Path) -> bytes:
    """Return the Ed25519 public key a key file holds in clear, without asking for the passphrase."""
    key = _read_fields(Path(path))[_K_PUBLIC]
    assert isinstance(key, bytes)  # checked by _read_fields
    return key


def is_encrypted(path: Path) -> bool:
    """True if the key file needs a passphrase to load."""
    return _read_fields(Path(path))[_K_KDF] == _KDF_ARGON2ID


def load_identity(path: Path, passphrase: str | None) -> Identity:
    """Load the identity in ``path``; raise ``KeyFileError`` saying what is wrong if it cannot."""
    path = Path(path)
    where = str(path)
    fields = _read_fields(path)
    sealed = fields[_K_SEED]
    assert isinstance(sealed, bytes)  # checked by _read_fields
    if fields[_K_KDF] == _KDF_NONE:
        seed = sealed
    else:
        if passphrase is None:
            raise KeyFileError(
                path=where,
                problem=KeyFileProblem.PASSPHRASE_REQUIRED,
                detail="is encrypted; passphrase needed",
            )
        seed = _unseal(where, fields, sealed, passphrase)
    if len(seed) != SEED_SIZE:
        raise KeyFileError(
            path=where, problem=KeyFileProblem.CORRUPT, detail="truncated or corrupt (seed size)"
        )
    identity = Identity(seed)
    if identity.public.ed25519 != fields[_K_PUBLIC]:
        raise KeyFileError(
            path=where, problem=KeyFileProblem.CORRUPT, detail="truncated or corrupt (public key mismatch)"
        )
    return identity


def _unseal(where: str, fields: dict[int, object], sealed: bytes, passphrase: str) -> bytes:
    ops, mem, salt, nonce = fields[_K_OPS], fields[_K_MEM], fields[_K_SALT], fields[_K_NONCE]
    assert isinstance(ops, int) and isinstance(mem, int)  # checked by _read_fields
    assert isinstance(salt, bytes) and isinstance(nonce, bytes)
    if not (argon2id.OPSLIMIT_MIN <= ops <= MAX_OPSLIMIT and argon2id.MEMLIMIT_MIN <= mem <= MAX_MEMLIMIT):
        raise KeyFileError(
            path=where, problem=KeyFileProblem.CORRUPT, detail="truncated or corrupt (KDF cost out of range)"
        )
    if len(salt) != argon2id.SALTBYTES or len(nonce) != _NONCE_SIZE or len(sealed) != _SEALED_SEED_SIZE:
        raise KeyFileError(
            path=where,
            problem=KeyFileProblem.CORRUPT,
            detail="truncated or corrupt (salt, nonce or seed size)",
        )
    key = _derive(passphrase, salt, KdfLimits(opslimit=ops, memlimit=mem))
    try:
        return bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, _header_and_aad(fields), nonce, key)
        )
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError(
            path=where,
            problem=KeyFileProblem.WRONG_PASSPHRASE,
            detail="wrong passphrase (or the file was altered)",
        ) from exc
