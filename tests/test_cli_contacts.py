"""``meshchat contact list | verify | accept-key | rename | block | unblock | blocked``, and ``meshchat
send`` refusing a contact whose key changed: on real profile folders, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from conftest import make_profile
from typer.testing import CliRunner

from meshchat import cli
from meshchat.contacts import Contacts, Verification
from meshchat.identity import Identity
from meshchat.profile import hold_profile
from meshchat.wire import Invite

runner = CliRunner()
BOB, BOB2, CAROL, STRANGER = (Identity(bytes([n]) * 32) for n in (0x51, 0x52, 0x53, 0x54))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(cli.PROFILE_ENV, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables on one line each


def run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def invite(identity: Identity, name: str) -> str:
    return Invite.create(identity, name=name).to_text()


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    folder, _ = make_profile(tmp_path, "alice", 1)
    ok("add", invite(BOB, "Bob"), "--profile", folder)
    ok("add", invite(CAROL, "Carol"), "--name", "Caz", "--profile", folder)
    return folder


def listed(profile: Path) -> dict[str, dict[str, object]]:
    data = json.loads(ok("contact", "list", "--json", "--profile", profile).stdout)
    return {c["peer_id"]: c for c in data["contacts"]}


def test_list_shows_verification_and_petname_against_the_claimed_name(profile: Path) -> None:
    contacts = listed(profile)
    assert contacts[BOB.public.peer_id] == {
        "peer_id": BOB.public.peer_id,
        "name": "Bob",
        "claimed_name": "Bob",
        "petname": None,
        "verification": "unverified",
        "blocked": False,
        "fingerprint": BOB.public.fingerprint,
    }
    carol = contacts[CAROL.public.peer_id]
    assert (carol["name"], carol["claimed_name"], carol["petname"]) == ("Caz", "Carol", "Caz")
    text = ok("contact", "list", "--profile", profile).stdout
    [caz_line] = [line for line in text.splitlines() if CAROL.public.peer_id in line]
    assert "Caz" in caz_line and "Carol" in caz_line and "unverified" in caz_line
    empty, _ = make_profile(profile.parent, "nobody", 9)
    assert "no contacts yet" in ok("contact", "list", "--profile", empty).stdout


def test_verify_rename_and_their_json(profile: Path) -> None:
    verified = json.loads(ok("contact", "verify", "Bob", "--json", "--profile", profile).stdout)
    assert verified["verification"] == "verified"
    assert "marked verified" in ok("contact", "verify", "Bob", "--profile", profile).stdout
    renamed = json.loads(ok("contact", "rename", "Bob", "Бобби", "--json", "--profile", profile).stdout)
    assert (renamed["name"], renamed["claimed_name"], renamed["petname"]) == ("Бобби", "Bob", "Бобби")
    assert "now shown as Bob" in ok("contact", "rename", "Бобби", "--clear", "--profile", profile).stdout
    taken = run("contact", "rename", "Bob", "Caz", "--profile", profile)
    assert taken.exit_code == 1 and "already called 'Caz'" in taken.output
    both = run("contact", "rename", "Bob", "X", "--clear", "--profile", profile)
    assert both.exit_code == 2 and "give the new NAME, or --clear" in both.output
    unknown = run("contact", "verify", "Dave", "--profile", profile)
    assert unknown.exit_code == 1 and "unknown peer or contact: Dave" in unknown.output
    assert Contacts(profile).find("Bob").verification is Verification.VERIFIED


def test_block_unblock_and_the_blocked_list(profile: Path) -> None:
    ok("contact", "block", "Caz", "--profile", profile)
    stranger = json.loads(
        ok("contact", "block", STRANGER.public.peer_id, "--json", "--profile", profile).stdout
    )
    assert stranger == {"peer_id": STRANGER.public.peer_id, "blocked": True}
    blocked = json.loads(ok("contact", "blocked", "--json", "--profile", profile).stdout)
    assert blocked == {
        "blocked": [
            {"peer_id": CAROL.public.peer_id, "name": "Caz"},
            {"peer_id": STRANGER.public.peer_id, "name": None},
        ]
    }
    text = ok("contact", "blocked", "--profile", profile).stdout
    assert f"Caz ({CAROL.public.peer_id})" in text and STRANGER.public.peer_id in text
    assert listed(profile)[CAROL.public.peer_id]["blocked"] is True
    nobody = run("contact", "block", "Dave", "--profile", profile)
    assert nobody.exit_code == 1 and "unknown peer or contact: Dave" in nobody.output
    assert (
        json.loads(ok("contact", "unblock", "Caz", "--json", "--profile", profile).stdout)["blocked"] is False
    )
    ok("contact", "unblock", STRANGER.public.peer_id, "--profile", profile)
    assert "nobody is blocked" in ok("contact", "blocked", "--profile", profile).stdout


def test_changes_wait_while_a_node_runs_but_reading_does_not(profile: Path) -> None:
    with hold_profile(profile):  # as a running node holds it
        refused = run("contact", "block", "Bob", "--profile", profile)
        assert refused.exit_code == 1 and "error:" in refused.output
        assert BOB.public.peer_id in listed(profile)
        ok("contact", "blocked", "--profile", profile)
    assert Contacts(profile).blocked() == []


def test_a_changed_key_is_marked_and_send_refuses_until_accepted(profile: Path) -> None:
    replaced = ok("add", invite(BOB2, "Bob"), "--replace", "--profile", profile)
    assert "contact accept-key Bob" in replaced.output
    assert listed(profile)[BOB2.public.peer_id]["verification"] == "changed"
    assert "KEY CHANGED" in ok("contact", "list", "--profile", profile).stdout
    # Refused before any passphrase or network: the warning, then the error line.
    for command in (["send", "hello", "--to", "Bob"], ["chat", "--to", "Bob"]):
        refused = run(*command, "--profile", profile)
        assert refused.exit_code == 1, refused.output
        assert "safety number of Bob changed" in refused.output
        assert "meshchat contact accept-key Bob" in refused.output
    accepted = json.loads(ok("contact", "accept-key", "Bob", "--json", "--profile", profile).stdout)
    assert accepted["verification"] == "unverified"
    assert "accepted" in ok("contact", "accept-key", "Bob", "--profile", profile).stdout
    scanned = json.loads(
        ok("add", invite(BOB, "Bob"), "--replace", "--verified", "--json", "--profile", profile).stdout
    )
    assert scanned["verification"] == "verified"
