"""Fixtures and Hypothesis strategies shared by meshchat's tests.

Strategies are plain module-level objects (``from conftest import seeds``): pytest puts this folder on
``sys.path``, and a strategy is a value, not something a fixture should build per test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import strategies as st

from meshchat.identity import KEY_FILE_NAME, SEED_SIZE, Identity, KdfLimits, save_identity

#: The cheapest argon2id libsodium allows (1 pass, 8 KiB): key-file tests run in milliseconds, not
#: ~0.2 s per derivation. Only one test uses the real defaults.
FAST_KDF = KdfLimits(opslimit=1, memlimit=8192)

#: Real text in several scripts, including the languages of Russia's republics, emoji and RTL.
MULTILINGUAL_SAMPLES = (
    "Привет, как дела?",
    "Рәхим итегез",  # Tatar
    "Башҡортостан",  # Bashkir
    "Нохчийчоь",  # Chechen
    "Саха Өрөспүүбүлүкэтэ",  # noqa: RUF001  # Yakut: Cyrillic letters are the point
    "Сәлам, дус! 👋",
    "Grüße aus Zürich",
    "你好，世界",  # noqa: RUF001  # the full-width comma is Chinese punctuation
    "مرحبا بالعالم",
    "🦊🌲🔥",
    "",
)

#: 32-byte Ed25519 seeds.
seeds = st.binary(min_size=SEED_SIZE, max_size=SEED_SIZE)
#: Identities derived from arbitrary seeds.
identities = seeds.map(Identity)
#: Message bodies as text: real multilingual samples or arbitrary Unicode (no surrogates).
text_bodies = st.one_of(st.sampled_from(MULTILINGUAL_SAMPLES), st.text(max_size=200))
#: Printable display text: any character outside the Unicode "C" (control/format/unassigned) classes.
printable_text = st.text(alphabet=st.characters(exclude_categories=("C",)), max_size=64)


@pytest.fixture
def fast_kdf() -> KdfLimits:
    """Argon2id limits small enough for tests that derive keys many times."""
    return FAST_KDF


def make_profile(tmp_path: Path, name: str, seed: int) -> tuple[Path, Identity]:
    """A profile folder ``tmp_path/name`` with an unlocked identity from ``seed`` (made once)."""
    folder = tmp_path / name
    identity = Identity(bytes([seed]) * 32)
    if not folder.exists():
        folder.mkdir()
        save_identity(folder / KEY_FILE_NAME, identity, None)
    return folder, identity
