"""docs/daemon.md against the method table: every method documented, the reference current, and every
example request run against real nodes (Alice's methods, Bob as her contact), its result compared in
shape with the documented one. Placeholders of the examples (an invite, a message id, a path...)
are replaced by real ones that the scenario made first."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from rpc_harness import WAIT, Pair, alice_and_bob, client

from meshchat.app.methods import METHODS
from meshchat.app.reference import REFERENCE_END, REFERENCE_START, reference_markdown
from meshchat.files.sqlite import ReceivedState
from meshchat.identity import Identity
from meshchat.wire import Invite

DOCS = Path(__file__).parent.parent / "docs" / "daemon.md"


def test_every_method_is_documented_and_the_reference_is_current() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for method in METHODS:
        assert f"### `{method.name}`" in text, method.name
        assert method.doc and method.returns and method.example is not None
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END) + len(REFERENCE_END)
    assert text[start:end] == reference_markdown(), "run: python -m meshchat.app.reference docs/daemon.md"
    for section in ("## Authentication", "## Framing on the Unix socket", "## Errors", "## Events"):
        assert section in text


def same_shape(example: Any, actual: Any, where: str = "result") -> None:
    """``actual`` has ``example``'s shape: the same JSON types, the same names in every object (a
    null on either side matches anything: nullable fields), lists compared by their first items."""
    if example is None or actual is None:
        return
    if isinstance(example, bool) or isinstance(actual, bool):
        assert isinstance(example, bool) and isinstance(actual, bool), (where, example, actual)
    elif isinstance(example, int | float):
        assert isinstance(actual, int | float), (where, example, actual)
    elif isinstance(example, dict):
        assert isinstance(actual, dict), (where, example, actual)
        if all(k.startswith("did:") for k in example):  # a map keyed by data (credentials.trusted)
            return
        assert set(example) == set(actual), (where, sorted(example), sorted(actual))
        for name, value in example.items():
            same_shape(value, actual[name], f"{where}.{name}")
    elif isinstance(example, list):
        assert isinstance(actual, list), (where, example, actual)
        if example and actual:
            same_shape(example[0], actual[0], f"{where}[0]")
    else:
        assert type(example) is type(actual), (where, example, actual)


async def prepare(pair: Pair, tmp_path: Path) -> dict[str, Any]:
    """What the examples' placeholders stand for, made for real: Bob sends Alice a message and a file,
    invites her to a group, asks her for a credential and issues her one."""
    alice, bob = pair.alice, pair.bob
    made: dict[str, Any] = {}
    made["carol_invite"] = Invite.create(Identity(b"\x07" * 32), name="Carol").to_text()
    photo = io.BytesIO()
    Invite.create(Identity(b"\x08" * 32), name="Dave").qr().save(photo, kind="png", scale=6)
    made["qr"] = base64.b64encode(photo.getvalue()).decode()
    for name, text in (("photo.jpg", "not really a photo"), ("contract.pdf", "we agree")):
        (tmp_path / name).write_text(text)
        made[name] = str(tmp_path / name)
    received = tmp_path / "for_alice.txt"
    received.write_text("a file from Bob")
    await bob.send("Alice", "hello Alice")
    await bob.files.send("Alice", received)
    bobs_group = bob.groups.create("Bob's", [alice.identity.public])
    made["bobs_group"] = bobs_group.group_id.hex()
    bob.credentials.request("Alice", "student")
    alice.credentials.trust(bob.credentials.did, "Bob")
    with trio.fail_after(WAIT):
        await alice.wait_for(
            lambda: (
                bool(alice.inbox())
                and bool(alice.files.received())
                and bool(alice.groups.invitations())
                and bool(alice.credentials.requests())
            )
        )
    made["message_id"] = alice.inbox()[0].message_id.hex()
    made["file_number"] = alice.files.received()[0].number
    alice.credentials.request("Bob", "member")
    with trio.fail_after(WAIT):
        await bob.wait_for(lambda: bool(bob.credentials.requests()))
    bob.credentials.issue("Alice", vct="member", claims={"name": "Alice"})
    with trio.fail_after(WAIT):
        await alice.wait_for(lambda: bool(alice.credentials.held()))
    made["held"] = alice.credentials.held()[0].credential_id
    return made


#: Per method: the example's params with its placeholders replaced, from what ``prepare`` made and
#: the results of the methods run before it (``results[name]``).
Override = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
OVERRIDES: dict[str, Override] = {
    "contacts.add": lambda made, _: {"invite": made["carol_invite"], "petname": "Carol"},
    "contacts.add_qr": lambda made, _: {"image": made["qr"], "petname": "Dave"},
    "contacts.rename": lambda made, _: {"contact": "Bob", "petname": None},  # the rest still says "Bob"
    "messages.mark_read": lambda made, _: {"id": made["message_id"]},
    "groups.rename": lambda _, __: {"group": "Family", "name": "Family"},  # later examples name it so
    "groups.status": lambda _, results: {"id": results["groups.send"]["id"]},
    "groups.join": lambda made, _: {"group": made["bobs_group"]},
    "files.send": lambda made, _: {"to": "Bob", "path": made["photo.jpg"]},
    "files.fetch": lambda made, _: {"number": made["file_number"]},
    "files.progress": lambda made, _: {"number": made["file_number"]},
    "credentials.request": lambda _, __: {"issuer": "Bob", "vct": "student"},
    "credentials.revoke": lambda _, results: {"credential_id": results["credentials.issue"]["credential_id"]},
    "credentials.trust": lambda _, results: {
        "did": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "name": "X",
    },
    "credentials.present": lambda made, results: {
        "credential_id": made["held"],
        "disclose": ["name"],
        "nonce": results["credentials.challenge"]["nonce"],
        "audience": results["credentials.challenge"]["audience"],
    },
    "credentials.verify": lambda _, results: {
        "presentation": results["credentials.present"]["presentation"],
        "nonce": results["credentials.challenge"]["nonce"],
    },
    "documents.propose": lambda made, _: {"path": made["contract.pdf"], "signers": ["Bob"], "threshold": 2},
    "documents.view": lambda _, results: {"doc_id": results["documents.propose"]["doc_id"]},
    "documents.sign": lambda _, results: {"doc_id": results["documents.propose"]["doc_id"]},
    "documents.revoke": lambda _, results: {"doc_id": results["documents.propose"]["doc_id"], "reason": "x"},
    "documents.bundle": lambda _, results: {"doc_id": results["documents.propose"]["doc_id"]},
}


async def test_every_example_runs_against_real_nodes_and_gives_the_documented_shape(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, client(pair.methods) as alice:
        made = await prepare(pair, tmp_path)
        results: dict[str, Any] = {}
        for method in METHODS:
            override = OVERRIDES.get(method.name)
            params = method.example.params if override is None else override(made, results)
            assert set(params) <= {p.name for p in method.params}, method.name
            reply = await alice.request(method.name, params)
            assert "error" not in reply, (method.name, params, reply)
            results[method.name] = reply["result"]
            same_shape(method.example.result, reply["result"], method.name)
        assert set(results) == {m.name for m in METHODS}
        # files.fetch started a download: let it finish before the nodes close (a transfer cut off
        # by the close leaves its socket to the garbage collector)
        with trio.fail_after(WAIT):
            await pair.alice.wait_for(
                lambda: pair.alice.files.attachment(made["file_number"]).state is ReceivedState.DONE
            )
