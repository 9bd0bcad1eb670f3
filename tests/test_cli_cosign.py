"""``meshchat cosign propose | list | status | sign | revoke | export`` and ``meshchat verify`` of the
bundle, each a real process on 127.0.0.1 with real profiles: Alice proposes to Bob while Bob's node
runs, Bob signs (a wrong ``--file`` refused first) while Alice's runs, both see the round complete,
the exported bundle verifies offline (an altered document does not), and Bob's revocation with
nobody online stays queued (exit 1, one ``error:`` line) while his own status shows it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from processes import JsonLinesProcess, stop_processes

from meshchat.cli.common import PASSPHRASE_ENV, PROFILE_ENV

MESHCHAT = [sys.executable, "-m", "meshchat"]
LOCAL = "/ip4/127.0.0.1/tcp/0"
WAIT = 60.0

pytestmark = pytest.mark.slow  # about 20 processes, each starting Python and py-libp2p


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


async def json_of(*args: str | Path) -> Any:
    return json.loads((await meshchat(*args, "--json")).stdout)


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 1, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


async def spawn_node(nursery: trio.Nursery, started: list[trio.Process], profile: Path) -> JsonLinesProcess:
    process = await trio.lowlevel.open_process(
        [*MESHCHAT, "node", "--profile", str(profile), "--json", "--listen", LOCAL],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    started.append(process)
    events = JsonLinesProcess(process)
    nursery.start_soon(events.read_events)
    await events.first("listening")
    return events


async def stop(node: JsonLinesProcess) -> None:
    node.process.send_signal(signal.SIGINT)  # stopped by PID
    with trio.fail_after(WAIT):
        await node.process.wait()


async def introduce(profile: Path, to: Path) -> None:
    """``to`` adds ``profile``'s invite (with the addresses its running node recorded)."""
    invite = (await meshchat("invite", "--profile", profile)).stdout.decode().strip()
    await meshchat("add", "--profile", to, invite)


def peer_ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["peer_id"] for e in entries]


async def test_propose_sign_export_verify_revoke_from_the_command_line(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for profile, name in ((alice, "Alice"), (bob, "Bob")):
        await meshchat("init", "--profile", profile, "--name", name, "--insecure-no-passphrase")
    alice_id = (await json_of("id", "--profile", alice))["peer_id"]
    bob_id = (await json_of("id", "--profile", bob))["peer_id"]
    document = tmp_path / "lease.txt"
    document.write_text("Bob rents Alice's garage from 1 March, 50 EUR a month.\n")
    started: list[trio.Process] = []
    async with trio.open_nursery() as nursery:
        try:
            await introduce(alice, bob)  # (a running node reads its contacts when it starts)
            bob_node = await spawn_node(nursery, started, bob)
            await introduce(bob, alice)

            # Alice proposes: both of them sign, both needed. Bob's node takes the proposal.
            proposed = await json_of(
                "cosign", "propose", document, "--signer", "Bob", "--need", "2", "--profile", alice
            )
            doc_id = proposed["doc_id"]
            assert proposed["state"] == "open" and proposed["threshold"] == 2
            assert sorted(peer_ids(proposed["signers"])) == sorted([alice_id, bob_id])
            assert proposed["statuses"] == ["delivered"]  # Bob's node sent its receipt
            await stop(bob_node)

            listed = await json_of("cosign", "list", "--profile", bob)
            [seen] = listed["documents"]
            assert seen["doc_id"] == doc_id and seen["name"] == "lease.txt" and seen["has_content"]
            assert seen["proposer"]["name"] == "Alice" and sorted(peer_ids(seen["pending"])) == sorted(
                [alice_id, bob_id]
            )
            assert "lease.txt" in (await meshchat("cosign", "list", "--profile", bob)).stdout.decode()

            # Bob signs while Alice's node runs; a different file is refused first.
            alice_node = await spawn_node(nursery, started, alice)
            await introduce(alice, bob)
            other = tmp_path / "other.txt"
            other.write_text("something else\n")
            refused = await meshchat("cosign", "sign", doc_id, "--file", other, "--profile", bob, check=False)
            assert "the document was altered" in one_error_line(refused)
            signed = await json_of("cosign", "sign", doc_id[:10], "--file", document, "--profile", bob)
            assert signed["doc_id"] == doc_id and peer_ids([s["signer"] for s in signed["signatures"]]) == [
                bob_id
            ]
            assert signed["statuses"] == ["delivered"] and signed["state"] == "open"
            await stop(alice_node)

            # Alice signs with nobody online: the signature waits in her outbox (exit 1), her round
            # is complete all the same.
            queued = await meshchat("cosign", "sign", doc_id, "--profile", alice, "--wait", "1", check=False)
            assert "wait in the outbox" in one_error_line(queued)
            status = await json_of("cosign", "status", doc_id, "--profile", alice)
            assert status["state"] == "complete" and status["pending"] == []
            assert sorted(peer_ids([s["signer"] for s in status["signatures"]])) == sorted([alice_id, bob_id])
            text = (await meshchat("cosign", "status", doc_id, "--profile", alice)).stdout.decode()
            assert "complete" in text and "Bob" in text

            # The bundle verifies offline, names both signers; an altered document fails.
            bundle = tmp_path / "lease.cosign.json"
            exported = await json_of("cosign", "export", doc_id, "--out", bundle, "--profile", alice)
            assert exported["complete"] and bundle.is_file()
            checked = await json_of("verify", document, bundle, "--profile", alice)
            assert checked["complete"] and checked["doc_id"] == doc_id
            assert sorted(peer_ids([s["signer"] for s in checked["signatures"]])) == sorted(
                [alice_id, bob_id]
            )
            assert "complete" in (await meshchat("verify", document, bundle)).stdout.decode()
            document.write_text("Bob rents Alice's garage from 1 March, 5 EUR a month.\n")
            altered = await meshchat("verify", document, bundle, check=False)
            assert "the document was altered" in one_error_line(altered)

            # Bob revokes with nobody online: queued (exit 1), his own view is open again.
            revoked = await meshchat(
                "cosign", "revoke", doc_id, "--reason", "price", "--profile", bob, "--wait", "1", check=False
            )
            assert "wait in the outbox" in one_error_line(revoked)
            mine = await json_of("cosign", "status", doc_id, "--profile", bob)
            assert mine["state"] == "open" and peer_ids(mine["revoked"]) == [bob_id]

            unknown = await meshchat("cosign", "status", "no-such-round", "--profile", bob, check=False)
            assert "no document" in one_error_line(unknown)
        finally:
            await stop_processes(started)
            nursery.cancel_scope.cancel()
