"""``meshchat device link | approve | list | remove`` as a user runs them, each a real process on
127.0.0.1: a new profile shows its request, the primary approves it (``--code``, ``--yes``), the new
device takes the profile (contacts, the root's invite), Bob's running node prints "Alice added a
device", ``list --json`` shows both, ``remove`` drops the laptop and Bob's node prints that too."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from processes import JsonLinesProcess, stop_processes

from meshchat.cli.common import PASSPHRASE_ENV, PROFILE_ENV
from meshchat.cli.runner import _describe, _Printer
from meshchat.contacts import Contact
from meshchat.identity import Identity
from meshchat.identity.devices import Device, DeviceList, LinkRequest
from meshchat.inbox import DirectMessage
from meshchat.store.messenger import DeviceListChanged, Linked
from meshchat.wire import Invite

MESHCHAT = [sys.executable, "-m", "meshchat"]
LOCAL = "/ip4/127.0.0.1/tcp/0"
WAIT = 60.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, PROFILE_ENV)}
    return {**env, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


async def meshchat(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [*MESHCHAT, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False, env=_env()
        )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


async def spawn(nursery: trio.Nursery, started: list[trio.Process], *args: str | Path) -> JsonLinesProcess:
    process = await trio.lowlevel.open_process(
        [*MESHCHAT, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    started.append(process)
    events = JsonLinesProcess(process)
    nursery.start_soon(events.read_events)
    return events


def _changes(events: JsonLinesProcess, key: str) -> list[dict[str, Any]]:
    return [e for e in events.events if e["event"] == "devices_changed" and e[key]]


async def test_link_approve_list_remove_from_the_command_line(tmp_path: Path) -> None:
    alice, bob, laptop = tmp_path / "alice", tmp_path / "bob", tmp_path / "laptop"
    for profile, name in ((alice, "Alice"), (bob, "Bob"), (laptop, "")):
        await meshchat("init", "--profile", profile, "--name", name, "--insecure-no-passphrase")
    started: list[trio.Process] = []
    async with trio.open_nursery() as nursery:
        try:
            # (a running node reads its contacts when it starts)
            await meshchat(
                "add", "--profile", bob, (await meshchat("invite", "--profile", alice)).stdout.decode()
            )
            bob_node = await spawn(nursery, started, "node", "--profile", bob, "--json", "--listen", LOCAL)
            await bob_node.first("listening")
            bob_invite = (await meshchat("invite", "--profile", bob)).stdout.decode().strip()
            await meshchat("add", "--profile", alice, bob_invite)

            # A profile with contacts is not new: it cannot be linked.
            refused = await meshchat("device", "link", "--profile", alice, "--listen", LOCAL, check=False)
            assert refused.returncode == 1 and "new profile" in refused.stderr.decode()

            link = await spawn(
                nursery, started, "device", "link", "--profile", laptop, "--name", "laptop", "--json",
                "--listen", LOCAL, "--timeout", str(WAIT), "--qr", tmp_path / "link.png",
            )  # fmt: skip
            request = await link.first("request")
            assert request["text"].startswith("MESHCHAT-LINK:") and len(request["code"]) == 6
            assert (tmp_path / "link.png").read_bytes().startswith(b"\x89PNG")
            wrong = "000000" if request["code"] != "000000" else "111111"
            mismatch = await meshchat(
                "device", "approve", request["text"], "--profile", alice, "--code", wrong, check=False
            )
            assert mismatch.returncode == 1 and "does not match" in mismatch.stderr.decode()
            # Without --code or --yes it asks; with no answer (no stdin) nothing is approved.
            unanswered = await meshchat("device", "approve", request["text"], "--profile", alice, check=False)
            assert unanswered.returncode == 1 and request["code"][:3] in unanswered.stderr.decode()
            # Alice's `meshchat node` recorded where it listens: her invite on the laptop carries it,
            # though `approve` itself listens nowhere.
            alice_id = json.loads((await meshchat("id", "--profile", alice, "--json")).stdout)["peer_id"]
            recorded = f"/ip4/127.0.0.1/tcp/4999/p2p/{alice_id}"
            (alice / "addresses.json").write_text(json.dumps({"addrs": [recorded], "written_at": 1}))
            args = ["device", "approve", request["text"], "--profile", alice, "--yes"]
            approved = json.loads((await meshchat(*args, "--json")).stdout)
            assert approved["name"] == "laptop" and approved["version"] == 2
            assert approved["grant"] in {"relayed", "delivered"} and approved["contacts"] == 1
            linked = await link.first("linked")
            assert linked["root"] == alice_id and linked["name"] == "laptop" and linked["contacts"] == 1
            with trio.fail_after(WAIT):
                await link.process.wait()
            assert link.process.returncode == 0

            # Bob's running node hears that Alice added a device.
            await bob_node.wait_for(lambda: bool(_changes(bob_node, "added")))
            [added] = _changes(bob_node, "added")
            assert added["contact"] == "Alice" and [d["name"] for d in added["added"]] == ["laptop"]

            for profile, this in ((alice, "primary"), (laptop, "laptop")):
                listed = json.loads((await meshchat("device", "list", "--profile", profile, "--json")).stdout)
                assert listed["root"] == alice_id and listed["version"] == 2
                assert [d["name"] for d in listed["devices"]] == ["primary", "laptop"]
                assert [d["name"] for d in listed["devices"] if d["this"]] == [this]
            # The laptop hands out Alice's invite; its contacts are Alice's.
            invite = json.loads((await meshchat("invite", "--profile", laptop, "--json")).stdout)
            assert invite["peer_id"] == alice_id and invite["linked_device"]
            assert invite["addrs"] == [recorded]
            shown = json.loads((await meshchat("id", "--profile", laptop, "--json")).stdout)
            assert shown["device_of"] == alice_id and shown["peer_id"] != alice_id
            assert "Bob" in (tmp_path / "laptop" / "contacts.json").read_text()
            # Bob's safety number is the same on both of Alice's devices: it is Alice's, not the laptop's.
            numbers = [
                json.loads((await meshchat("safety-number", bob_invite, "--profile", p, "--json")).stdout)
                for p in (alice, laptop)
            ]
            assert numbers[0]["safety_number"] == numbers[1]["safety_number"]
            not_primary = await meshchat("device", "remove", "primary", "--profile", laptop, check=False)
            assert not_primary.returncode == 1 and "primary" in not_primary.stderr.decode()

            removed = json.loads(
                (await meshchat("device", "remove", "laptop", "--profile", alice, "--json")).stdout
            )
            assert removed["name"] == "laptop" and removed["version"] == 3 and removed["lists_sent"] == 1
            await bob_node.wait_for(lambda: bool(_changes(bob_node, "removed")))
            [gone] = _changes(bob_node, "removed")
            assert [d["name"] for d in gone["removed"]] == ["laptop"]
            listed = json.loads((await meshchat("device", "list", "--profile", alice, "--json")).stdout)
            assert [d["name"] for d in listed["devices"]] == ["primary"]
            text = (await meshchat("device", "list", "--profile", alice)).stdout.decode()
            assert "primary" in text and "laptop" not in text

            bob_node.process.send_signal(signal.SIGINT)  # stopped by PID
            with trio.fail_after(WAIT):
                await bob_node.process.wait()
            assert bob_node.process.returncode == 0
        finally:
            await stop_processes(started)
            nursery.cancel_scope.cancel()


# --- how node and chat print device events (no network) ---------------------------------------------


def _printed(event: object, names: dict[str, str], *, json_lines: bool) -> str:
    out = io.StringIO()
    _describe(event, _Printer(out, json_lines=json_lines), names)  # type: ignore[arg-type]
    return out.getvalue()


def test_device_events_read_as_sentences_and_json() -> None:
    alice, laptop, phone = Identity(b"\x01" * 32), Identity(b"\x05" * 32), Identity(b"\x06" * 32)
    first = DeviceList.first(alice, name="primary", wall_now=1.0)
    two = first.with_device(alice, Device(key=laptop.public.ed25519, name="laptop", added=2))
    three = two.with_device(alice, Device(key=phone.public.ed25519, name="phone", added=3))
    names = {alice.public.peer_id: "Alice"}
    # A list learnt for the first time names her primary too: only the laptop was "added".
    learnt = DeviceListChanged(
        root=alice.public.ed25519, devices=two, added=two.devices, removed=(), own=False
    )
    assert "Alice added a device 'laptop'" in _printed(learnt, names, json_lines=False)
    assert "primary" not in _printed(learnt, names, json_lines=False)
    [line] = _printed(learnt, names, json_lines=True).splitlines()
    assert json.loads(line) == {
        "event": "devices_changed",
        "peer_id": alice.public.peer_id,
        "contact": "Alice",
        "own": False,
        "version": 2,
        "added": [{"name": "laptop", "peer_id": laptop.public.peer_id}],
        "removed": [],
    }
    gone = three.without_device(alice, laptop.public.ed25519)
    removed = DeviceListChanged(
        root=alice.public.ed25519, devices=gone, added=(), removed=two.devices[1:], own=True
    )
    assert "you removed a device 'laptop'" in _printed(removed, names, json_lines=False)
    linked = Linked(root=alice.public, devices=two, snapshot=b"")
    assert f"this profile is now a device of {alice.public.peer_id}" in _printed(linked, {}, json_lines=False)
    # A message another of our devices sent to Bob: "you to Bob", the device named in JSON.
    bob = Identity(b"\x02" * 32)
    contact = Contact(name="Bob", invite=Invite.create(bob, name="Bob"))
    copy = DirectMessage(
        sender=alice.public, contact=None, body=b"hi", sent_at_ms=0, message_id=b"\x00" * 32, seq=1,
        number=1, device=laptop.public, to=contact,
    )  # fmt: skip
    assert "you to Bob (device" in _printed(copy, {}, json_lines=False)
    fields = json.loads(_printed(copy, {}, json_lines=True))
    assert fields["to"] == bob.public.peer_id and fields["to_contact"] == "Bob"
    assert fields["device"] == laptop.public.peer_id and fields["sender"] == alice.public.peer_id


async def test_link_prints_the_request_alone_on_stdout_and_gives_up_when_nobody_approves(
    tmp_path: Path,
) -> None:
    """``REQUEST=$(meshchat device link)`` works: the request alone on stdout, the code on stderr; with
    no approval within --timeout it fails saying so (exit 1), and the request stays valid text."""
    new = tmp_path / "new"
    await meshchat("init", "--profile", new, "--insecure-no-passphrase")
    result = await meshchat(
        "device", "link", "--profile", new, "--listen", LOCAL, "--timeout", "1", check=False
    )
    assert result.returncode == 1
    [line] = result.stdout.decode().splitlines()
    request = LinkRequest.from_text(line, wall_now=time.time())
    assert request.name == "laptop"
    errors = result.stderr.decode()
    assert f"{request.code()[:3]} {request.code()[3:]}" in errors and "no approval" in errors
