"""A contact whose key changed (a new invite under a name this profile already knows with another key)
is a changed safety number: refused with ``KeyChanged`` until the user says they compared it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_profile
from typer.testing import CliRunner

from meshchat.cli import app
from meshchat.contacts import Contacts
from meshchat.errors import KeyChanged
from meshchat.identity import Identity
from meshchat.wire import Invite

runner = CliRunner()


def test_a_new_key_under_a_known_name_is_a_changed_safety_number(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    contacts = Contacts(folder)
    old, new = Identity(b"\x21" * 32), Identity(b"\x22" * 32)
    contacts.add(Invite.create(old, name="Bob").to_text())
    contacts.add(Invite.create(old, name="Bob", addrs=["/ip4/127.0.0.1/tcp/9"]).to_text())  # same key: fine
    with pytest.raises(KeyChanged) as caught:
        contacts.add(Invite.create(new, name="Bob").to_text())
    assert (caught.value.old, caught.value.new) == (old.public.fingerprint, new.public.fingerprint)
    assert [c.invite.public for c in Contacts(folder)] == [old.public]  # nothing changed on disk
    # Another local name is another contact, not a changed key.
    contacts.add(Invite.create(new, name="Bob").to_text(), name="Bob (work)")
    assert len(Contacts(folder)) == 2
    # Accepted once compared: the old key goes.
    third = Identity(b"\x23" * 32)
    contacts.add(Invite.create(third, name="Bob").to_text(), replace_key=True)
    assert {c.name: c.invite.public for c in Contacts(folder)} == {
        "Bob": third.public,
        "Bob (work)": new.public,
    }


def test_meshchat_add_warns_and_needs_replace(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    old, new = Identity(b"\x31" * 32), Identity(b"\x32" * 32)
    first = runner.invoke(app, ["add", Invite.create(old, name="Dana").to_text(), "--profile", str(folder)])
    assert first.exit_code == 0, first.output
    changed = Invite.create(new, name="Dana").to_text()
    refused = runner.invoke(app, ["add", changed, "--profile", str(folder)])
    assert refused.exit_code != 0 and "safety number of Dana changed" in refused.output
    assert Contacts(folder).find("Dana").invite.public == old.public
    accepted = runner.invoke(app, ["add", changed, "--replace", "--profile", str(folder)])
    assert accepted.exit_code == 0, accepted.output
    assert Contacts(folder).find("Dana").invite.public == new.public
