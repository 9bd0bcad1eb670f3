"""The package's front door: every public name resolves, and importing it loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import meshchat


def test_every_public_name_resolves_to_its_home() -> None:
    assert set(meshchat.__all__) == set(meshchat._HOMES)
    for name in meshchat.__all__:
        value = getattr(meshchat, name)
        assert getattr(value, "__name__", name) == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        _ = meshchat.NoSuchThing  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("meshchat.NoSuchThing resolved")


def test_importing_meshchat_loads_no_crypto_network_or_store() -> None:
    heavy = ("nacl", "trio", "libp2p", "msgpack", "meshchat.store")
    code = f"import sys, meshchat; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
