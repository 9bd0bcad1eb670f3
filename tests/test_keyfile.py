"""Key files: round trips, permissions, atomic writes, and a typed ``KeyFileError`` for every bad file.

Files are crafted by re-encoding the layout the keyfile module documents (``MCKEY``, a version byte,
then a msgpack map 1 kdf, 2 opslimit, 3 memlimit, 4 salt, 5 nonce, 6 public key, 7 sealed seed).
All tests but one use the cheapest argon2id (``fast_kdf``); ``test_default_kdf_limits`` uses the real
defaults once.
"""

from __future__ import annotations

import os
import random
import stat
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import nacl.bindings as sodium
import pytest
from conftest import FAST_KDF
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nacl.pwhash import argon2id

from meshchat.errors import KeyFileError, KeyFileProblem
from meshchat.identity import (
    Identity,
    KdfLimits,
    is_encrypted,
    load_identity,
    read_public_key,
    save_identity,
)
from meshchat.identity.keyfile import MAX_KEY_FILE_SIZE, MAX_MEMLIMIT, MAX_OPSLIMIT

MAGIC = b"MCKEY"
ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
PASSPHRASE = "correct horse battery staple"


def read_fields(path: Path) -> dict[int, object]:
    data = path.read_bytes()
    assert data[:6] == MAGIC + b"\x01"
    fields = msgpack.unpackb(data[6:], strict_map_key=False)
    assert isinstance(fields, dict)
    return fields


def write_raw(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def write_fields(path: Path, fields: dict[int, object], *, version: int = 1) -> None:
    write_raw(path, MAGIC + bytes([version]) + msgpack.packb(fields, use_bin_type=True))


def problem_of(call: Callable[[], object]) -> KeyFileProblem:
    with pytest.raises(KeyFileError) as caught:
        call()
    return caught.value.problem


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "profile" / "identity.key"


@pytest.fixture
def encrypted(key_path: Path, fast_kdf: KdfLimits) -> Path:
    save_identity(key_path, ALICE, PASSPHRASE, limits=fast_kdf)
    return key_path


@pytest.fixture
def plain(key_path: Path) -> Path:
    save_identity(key_path, ALICE, None)
    return key_path


# --- round trips ---------------------------------------------------------------------------------


def test_round_trip_without_passphrase(plain: Path) -> None:
    loaded = load_identity(plain, None)
    assert loaded.seed == ALICE.seed
    assert loaded.public == ALICE.public
    assert not is_encrypted(plain)
    assert read_public_key(plain) == ALICE.public.ed25519


def test_round_trip_with_passphrase(encrypted: Path) -> None:
    loaded = load_identity(encrypted, PASSPHRASE)
    assert loaded.seed == ALICE.seed
    assert loaded.public == ALICE.public
    assert is_encrypted(encrypted)
    assert ALICE.seed not in encrypted.read_bytes()


def test_public_key_and_encryption_are_readable_without_the_passphrase(encrypted: Path) -> None:
    assert read_public_key(encrypted) == ALICE.public.ed25519
    assert is_encrypted(encrypted) is True


def test_default_kdf_limits(key_path: Path) -> None:
    # The one test that pays for the real argon2id cost (~0.1-0.3 s per derivation).
    save_identity(key_path, ALICE, PASSPHRASE)
    fields = read_fields(key_path)
    assert (fields[2], fields[3]) == (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
    assert load_identity(key_path, PASSPHRASE).seed == ALICE.seed
    assert problem_of(lambda: load_identity(key_path, "wrong")) is KeyFileProblem.WRONG_PASSPHRASE


@pytest.mark.parametrize(
    ("saved_with", "loaded_with"),
    [
        ("пароль", "пароль"),
        ("Рәхим итегез 🔑", "Рәхим итегез 🔑"),
        ("Башҡортостан", "Башҡортостан"),
        ("caf\u00e9", "cafe\u0301"),  # NFC saved, NFD typed
        ("cafe\u0301", "caf\u00e9"),  # NFD saved, NFC typed
        ("\u2126hm", "\u03a9hm"),  # OHM SIGN normalises to GREEK CAPITAL OMEGA under NFC
        ("\u04de", "\u0417\u0308"),  # Udmurt letter, precomposed vs combining diaeresis
    ],
)
def test_unicode_passphrases_in_any_normal_form(
    key_path: Path, fast_kdf: KdfLimits, saved_with: str, loaded_with: str
) -> None:
    save_identity(key_path, ALICE, saved_with, limits=fast_kdf)
    assert load_identity(key_path, loaded_with).seed == ALICE.seed


def test_normalisation_is_nfc_not_nfkc(key_path: Path, fast_kdf: KdfLimits) -> None:
    # NFKC would fold the ligature "ﬁ" into "fi", making distinct passphrases equal.
    save_identity(key_path, ALICE, "\ufb01sh", limits=fast_kdf)
    assert problem_of(lambda: load_identity(key_path, "fish")) is KeyFileProblem.WRONG_PASSPHRASE


@settings(max_examples=25, deadline=None)
@given(passphrase=st.text(min_size=1, max_size=40))
def test_any_passphrase_loads_in_either_normal_form(
    tmp_path_factory: pytest.TempPathFactory, passphrase: str
) -> None:
    path = tmp_path_factory.mktemp("passphrase") / "identity.key"
    save_identity(path, BOB, unicodedata.normalize("NFD", passphrase), limits=FAST_KDF)
    assert load_identity(path, unicodedata.normalize("NFC", passphrase)).seed == BOB.seed
    assert load_identity(path, passphrase).seed == BOB.seed


def test_empty_passphrase_is_refused(key_path: Path) -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        save_identity(key_path, ALICE, "")
    assert not key_path.exists()


# --- how files are written ------------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_file_is_mode_0600_and_no_temporary_file_is_left(
    key_path: Path, fast_kdf: KdfLimits, passphrase: str | None
) -> None:
    save_identity(key_path, ALICE, passphrase, limits=fast_kdf)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]
    save_identity(key_path, BOB, passphrase, limits=fast_kdf, overwrite=True)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]


def test_save_refuses_to_overwrite(plain: Path, fast_kdf: KdfLimits) -> None:
    before = plain.read_bytes()
    with pytest.raises(KeyFileError) as caught:
        save_identity(plain, BOB, None)
    assert caught.value.problem is KeyFileProblem.EXISTS
    assert plain.read_bytes() == before
    assert [p.name for p in plain.parent.iterdir()] == [plain.name]
    save_identity(plain, BOB, PASSPHRASE, limits=fast_kdf, overwrite=True)
    assert load_identity(plain, PASSPHRASE).seed == BOB.seed
    assert [p.name for p in plain.parent.iterdir()] == [plain.name]


def test_injected_randomness_is_used_for_salt_and_nonce(tmp_path: Path, fast_kdf: KdfLimits) -> None:
    def fake(n: int) -> bytes:
        return bytes([7]) * n

    save_identity(tmp_path / "a", ALICE, PASSPHRASE, limits=fast_kdf, random_bytes=fake)
    save_identity(tmp_path / "b", ALICE, PASSPHRASE, limits=fast_kdf, random_bytes=fake)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    fields = read_fields(tmp_path / "a")
    assert fields[4] == bytes([7]) * argon2id.SALTBYTES
    assert fields[5] == bytes([7]) * 24
    save_identity(tmp_path / "c", ALICE, PASSPHRASE, limits=fast_kdf)
    assert read_fields(tmp_path / "c")[4] != fields[4]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; see the next test")
def test_save_into_a_read_only_directory_is_an_io_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(KeyFileError) as caught:
            save_identity(folder / "identity.key", ALICE, None)
        assert caught.value.problem is KeyFileProblem.IO
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_save_below_a_regular_file_is_an_io_error(tmp_path: Path) -> None:
    # Works as root too: no permission bit makes a regular file usable as a folder.
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    with pytest.raises(KeyFileError) as caught:
        save_identity(blocker / "identity.key", ALICE, None)
    assert caught.value.problem is KeyFileProblem.IO
    assert blocker.read_bytes() == b""


def test_overwriting_a_directory_is_an_io_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "identity.key"
    target.mkdir()
    with pytest.raises(KeyFileError) as caught:
        save_identity(target, ALICE, None, overwrite=True)
    assert caught.value.problem is KeyFileProblem.IO
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]
    assert target.is_dir()


# --- every kind of bad file -----------------------------------------------------------------------


def test_missing_file(key_path: Path) -> None:
    assert problem_of(lambda: load_identity(key_path, None)) is KeyFileProblem.MISSING
    assert problem_of(lambda: read_public_key(key_path)) is KeyFileProblem.MISSING
    assert problem_of(lambda: is_encrypted(key_path)) is KeyFileProblem.MISSING


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    assert problem_of(lambda: load_identity(tmp_path / "d", None)) is KeyFileProblem.IO


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o620, 0o602, 0o610, 0o601, 0o777])
def test_insecure_permissions_are_refused(plain: Path, mode: int) -> None:
    plain.chmod(mode)
    with pytest.raises(KeyFileError) as caught:
        load_identity(plain, None)
    assert caught.value.problem is KeyFileProblem.INSECURE_PERMISSIONS
    assert f"{mode:04o}" in str(caught.value)
    assert problem_of(lambda: read_public_key(plain)) is KeyFileProblem.INSECURE_PERMISSIONS
    assert problem_of(lambda: is_encrypted(plain)) is KeyFileProblem.INSECURE_PERMISSIONS


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o700])
def test_owner_only_modes_load(plain: Path, mode: int) -> None:
    plain.chmod(mode)
    assert load_identity(plain, None).seed == ALICE.seed


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_every_truncation_is_corrupt(request: pytest.FixtureRequest, kind: str) -> None:
    path: Path = request.getfixturevalue(kind)
    data = path.read_bytes()
    for length in range(len(data)):
        write_raw(path, data[:length])
        assert problem_of(lambda: load_identity(path, PASSPHRASE)) is KeyFileProblem.CORRUPT, length
        assert problem_of(lambda: read_public_key(path)) is KeyFileProblem.CORRUPT, length


def test_garbage_files_are_corrupt(plain: Path) -> None:
    valid = plain.read_bytes()
    rng = random.Random(20240601)
    garbage = {
        "random bytes": rng.randbytes(200),
        "magic and version, then garbage": MAGIC + b"\x01" + rng.randbytes(100),
        "magic and version only": MAGIC + b"\x01",
        "wrong magic": b"MCKEZ" + valid[5:],
        "valid file and a trailing byte": valid + b"\x00",
        "not a map": MAGIC + b"\x01" + msgpack.packb([1, 2, 3]),
        "a map with string keys": MAGIC + b"\x01" + msgpack.packb({"1": 0}),
        "an unhashable key": MAGIC + b"\x01" + b"\x81\x91\x01\x01",  # {[1]: 1}
        "huge": valid + bytes(MAX_KEY_FILE_SIZE),
        "just over the size limit": (valid * 40)[: MAX_KEY_FILE_SIZE + 1],
    }
    for what, data in garbage.items():
        write_raw(plain, data)
        assert problem_of(lambda: load_identity(plain, PASSPHRASE)) is KeyFileProblem.CORRUPT, what
    for seed in range(20):
        # After the magic, the first garbage byte is read as the version.
        data = MAGIC + random.Random(seed).randbytes(100)
        write_raw(plain, data)
        expected = KeyFileProblem.CORRUPT if data[5] == 1 else KeyFileProblem.UNKNOWN_VERSION
        assert problem_of(lambda: load_identity(plain, PASSPHRASE)) is expected


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version(plain: Path, version: int) -> None:
    data = bytearray(plain.read_bytes())
    data[len(MAGIC)] = version
    write_raw(plain, bytes(data))
    with pytest.raises(KeyFileError) as caught:
        load_identity(plain, None)
    assert caught.value.problem is KeyFileProblem.UNKNOWN_VERSION
    assert str(version) in str(caught.value)
    assert problem_of(lambda: read_public_key(plain)) is KeyFileProblem.UNKNOWN_VERSION


def test_wrong_passphrase(encrypted: Path) -> None:
    assert problem_of(lambda: load_identity(encrypted, "Correct horse battery staple")) is (
        KeyFileProblem.WRONG_PASSPHRASE
    )


def test_passphrase_required(encrypted: Path) -> None:
    assert problem_of(lambda: load_identity(encrypted, None)) is KeyFileProblem.PASSPHRASE_REQUIRED


# --- tampering ------------------------------------------------------------------------------------


def _bytes_field(fields: dict[int, object], key: int) -> bytes:
    value = fields[key]
    assert isinstance(value, bytes)
    return value


def _flipped(fields: dict[int, object], key: int) -> bytes:
    value = _bytes_field(fields, key)
    return bytes([value[0] ^ 1]) + value[1:]


def _kdf_switched_off(fields: dict[int, object]) -> dict[int, object]:
    # Claim "no KDF", keeping the sealed (48-byte) seed: it must not be taken for a seed.
    return {1: 0, 6: fields[6], 7: fields[7]}


#: Each entry returns the tampered map of an encrypted key file.
ENCRYPTED_TAMPERING: dict[str, Callable[[dict[int, object]], dict[int, object]]] = {
    "public key swapped": lambda f: {**f, 6: BOB.public.ed25519},
    "opslimit raised": lambda f: {**f, 2: 2},
    "memlimit raised": lambda f: {**f, 3: 16384},
    "salt changed": lambda f: {**f, 4: _flipped(f, 4)},
    "nonce changed": lambda f: {**f, 5: _flipped(f, 5)},
    "sealed seed changed": lambda f: {**f, 7: _flipped(f, 7)},
    "sealed seed truncated": lambda f: {**f, 7: _bytes_field(f, 7)[:-1]},
    "sealed seed too short for a tag": lambda f: {**f, 7: b"\x00" * 8},
    "kdf switched off": _kdf_switched_off,
    "kdf unknown": lambda f: {**f, 1: 2},
}


@pytest.mark.parametrize("tamper", ENCRYPTED_TAMPERING.values(), ids=ENCRYPTED_TAMPERING.keys())
def test_tampering_with_an_encrypted_file_is_detected(
    encrypted: Path, tamper: Callable[[dict[int, object]], dict[int, object]]
) -> None:
    write_fields(encrypted, tamper(read_fields(encrypted)))
    with pytest.raises(KeyFileError) as caught:
        load_identity(encrypted, PASSPHRASE)
    assert caught.value.problem in {KeyFileProblem.WRONG_PASSPHRASE, KeyFileProblem.CORRUPT}


def test_swapping_the_public_key_of_a_plain_file_is_detected(plain: Path) -> None:
    fields = read_fields(plain)
    fields[6] = BOB.public.ed25519
    write_fields(plain, fields)
    assert problem_of(lambda: load_identity(plain, None)) is KeyFileProblem.CORRUPT
    fields[6], fields[7] = ALICE.public.ed25519, BOB.seed
    write_fields(plain, fields)
    assert problem_of(lambda: load_identity(plain, None)) is KeyFileProblem.CORRUPT


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (3, MAX_MEMLIMIT + 1),
        (3, 2**40),
        (3, 2**64 - 1),
        (3, argon2id.MEMLIMIT_MIN - 1),
        (3, 0),
        (3, -1),
        (2, MAX_OPSLIMIT + 1),
        (2, 2**63 - 1),
        (2, 0),
        (2, -(2**63)),
        (4, bytes(argon2id.SALTBYTES - 1)),
        (4, bytes(argon2id.SALTBYTES + 1)),
        (5, bytes(23)),
        (5, bytes(25)),
    ],
)
def test_kdf_parameters_out_of_range_are_corrupt_without_running_argon2id(
    encrypted: Path, monkeypatch: pytest.MonkeyPatch, field: int, value: object
) -> None:
    fields = read_fields(encrypted)
    fields[field] = value
    write_fields(encrypted, fields)

    def must_not_run(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("argon2id ran on parameters that should have been refused")

    monkeypatch.setattr(argon2id, "kdf", must_not_run)
    assert problem_of(lambda: load_identity(encrypted, PASSPHRASE)) is KeyFileProblem.CORRUPT
    # The spy is wired in: with the parameter restored, loading reaches argon2id and trips it.
    fields[field] = DOCUMENTED_ENCRYPTED[field]
    write_fields(encrypted, fields)
    with pytest.raises(AssertionError, match="argon2id ran"):
        load_identity(encrypted, PASSPHRASE)


@pytest.mark.parametrize(
    ("field", "value"),
    [(1, "1"), (1, 1.0), (1, True), (2, "1"), (3, 8192.0), (4, "salt"), (6, "key"), (7, None), (8, b"")],
)
def test_fields_of_the_wrong_type_are_corrupt(encrypted: Path, field: int, value: object) -> None:
    fields = read_fields(encrypted)
    fields[field] = value
    write_fields(encrypted, fields)
    assert problem_of(lambda: load_identity(encrypted, PASSPHRASE)) is KeyFileProblem.CORRUPT


@pytest.mark.parametrize("missing", [1, 2, 3, 4, 5, 6, 7])
def test_missing_fields_are_corrupt(encrypted: Path, missing: int) -> None:
    fields = read_fields(encrypted)
    del fields[missing]
    write_fields(encrypted, fields)
    assert problem_of(lambda: load_identity(encrypted, PASSPHRASE)) is KeyFileProblem.CORRUPT


# --- the documented layout, built by hand ---------------------------------------------------------


def documented_encrypted_fields(identity: Identity, passphrase: str) -> dict[int, object]:
    """An encrypted key file's map, built from the module docstring alone (not with save_identity).

    The seed is sealed with XChaCha20-Poly1305; the associated data is the header and every field but
    the sealed seed, msgpack-encoded in the order they appear in the file.
    """
    salt, nonce = bytes(range(16)), bytes(range(24))
    fields: dict[int, object] = {1: 1, 2: FAST_KDF.opslimit, 3: FAST_KDF.memlimit, 4: salt, 5: nonce}
    fields[6] = identity.public.ed25519
    key = argon2id.kdf(32, passphrase.encode(), salt, opslimit=FAST_KDF.opslimit, memlimit=FAST_KDF.memlimit)
    aad = MAGIC + b"\x01" + msgpack.packb(fields, use_bin_type=True)
    fields[7] = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(identity.seed, aad, nonce, key)
    return fields


DOCUMENTED_ENCRYPTED = documented_encrypted_fields(ALICE, PASSPHRASE)
DOCUMENTED_PLAIN: dict[int, object] = {1: 0, 6: ALICE.public.ed25519, 7: ALICE.seed}


@pytest.mark.parametrize("fields", [DOCUMENTED_ENCRYPTED, DOCUMENTED_PLAIN], ids=["encrypted", "plain"])
def test_a_file_built_from_the_documented_layout_loads(key_path: Path, fields: dict[int, object]) -> None:
    key_path.parent.mkdir()
    write_fields(key_path, fields)
    assert load_identity(key_path, PASSPHRASE).seed == ALICE.seed


# --- any bytes at all -----------------------------------------------------------------------------

_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=64),
    st.lists(st.integers(-1000, 1000), max_size=3),
)
#: Values near the edges of what each field accepts. The argon2id cost stays small whenever it is
#: within range (at most 16 passes over 32 KiB), so a file that passes every check costs milliseconds.
_EDGE_VALUES: dict[int, st.SearchStrategy[object]] = {
    1: st.sampled_from([0, 1, 2, -1]),
    2: st.sampled_from([0, 1, 2, MAX_OPSLIMIT, MAX_OPSLIMIT + 1, -1]),
    3: st.sampled_from([0, argon2id.MEMLIMIT_MIN - 1, 8192, 32768, MAX_MEMLIMIT + 1, -1]),
    4: st.binary(min_size=15, max_size=17),
    5: st.binary(min_size=23, max_size=25),
    6: st.sampled_from([BOB.public.ed25519, bytes(32), ALICE.public.ed25519[:31]]),
    7: st.binary(max_size=64),
}


@st.composite
def _mutated_fields(draw: st.DrawFn) -> dict[int, object]:
    """A valid key file's map with a few fields dropped, changed to edge values or other types."""
    fields = dict(draw(st.sampled_from([DOCUMENTED_ENCRYPTED, DOCUMENTED_PLAIN])))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.integers(0, 8))
        action = draw(st.sampled_from(["edge", "edge", "other type", "drop"]))
        if action == "drop":
            fields.pop(key, None)
        elif action == "edge" and key in _EDGE_VALUES:
            fields[key] = draw(_EDGE_VALUES[key])
        else:
            fields[key] = draw(_ANY_VALUE)
    return fields


def _key_file_bytes() -> st.SearchStrategy[bytes]:
    header = MAGIC + b"\x01"
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: MAGIC + b),
        st.binary(max_size=300).map(lambda b: header + b),
        _mutated_fields().map(lambda f: header + msgpack.packb(f, use_bin_type=True)),
        st.dictionaries(st.integers(0, 8), _ANY_VALUE, max_size=9).map(
            lambda f: header + msgpack.packb(f, use_bin_type=True)
        ),
    )


# A sealed seed shorter than the 16-byte Poly1305 tag, in an otherwise valid file: random search
# reaches it only now and then, so it is always tried.
_SHORT_SEALED_SEED = MAGIC + b"\x01" + msgpack.packb({**DOCUMENTED_ENCRYPTED, 7: b"\x00" * 8})


@settings(max_examples=200, deadline=None)
@given(data=_key_file_bytes(), passphrase=st.sampled_from([None, PASSPHRASE]))
@example(data=_SHORT_SEALED_SEED, passphrase=PASSPHRASE)
def test_any_file_loads_or_raises_key_file_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, passphrase: str | None
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "identity.key"
    write_raw(path, data)
    try:
        identity = load_identity(path, passphrase)
    except KeyFileError as exc:
        assert isinstance(exc.problem, KeyFileProblem)
    else:
        assert identity.public.ed25519 == read_public_key(path)
    for call in (read_public_key, is_encrypted):
        try:
            call(path)
        except KeyFileError as exc:
            assert isinstance(exc.problem, KeyFileProblem)
