"""Three partners co-sign a contract on 127.0.0.1: two signatures of three are enough (2-of-3).

Anna, Ben and Chloe each run a node on their own profile (a temporary folder here; an app keeps it)
and know each other as contacts. Anna proposes the contract to all three with the rule "2 of 3";
the proposal and every signature travel as sealed 1:1 control messages (stored on mailboxes for a
partner who is offline, when there are mailboxes); every partner sees the same status. Ben and
Chloe sign, the round is complete at all three nodes, and the bundle Ben exports is checked with no
network at all (``meshchat verify contract.txt contract.cosign.json`` does the same).

Run: python examples/contract.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from meshchat import Identity, Node
from meshchat.documents.bundle import verify_bundle
from meshchat.documents.events import DocumentState
from meshchat.documents.signature import digest_bytes
from meshchat.errors import DocumentMismatch, UnknownDocument
from meshchat.identity import KEY_FILE_NAME, save_identity
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
NAMES = ["Anna", "Ben", "Chloe"]
WAIT = 60.0  # seconds any one step may take before the example gives up (a slow CI machine)
FAST_RETRY = StoreConfig(retry_initial=0.5)  # resend unacknowledged control messages quickly
CONTRACT = (
    b"Partnership agreement\n\n"
    b"Anna, Ben and Chloe run the bicycle repair shop together. Profits are shared equally.\n"
    b"Any decision binding the shop needs the signatures of two of the three partners.\n"
)


def status(node: Node, doc_id: str) -> str:
    """One partner's view of the round, in a line."""
    try:
        view = node.documents.view(doc_id)
    except UnknownDocument:
        return "(not received yet)"
    proposal = view.proposal
    return f"{view.state.name.lower()}, {len(view.signatures)} of {proposal.threshold} signatures"


def print_status(nodes: dict[str, Node], doc_id: str) -> None:
    for name, node in nodes.items():
        print(f"  {name:6s} sees: {status(node, doc_id)}")


async def until_all(nodes: dict[str, Node], condition: Callable[[Node], bool]) -> None:
    """Wait (at most ``WAIT`` each) until ``condition`` holds at every node."""
    for node in nodes.values():
        with trio.fail_after(WAIT):
            await node.wait_for(lambda n=node: condition(n))  # type: ignore[misc]


def has(doc_id: str, state: DocumentState, signatures: int) -> Callable[[Node], bool]:
    def check(node: Node) -> bool:
        try:
            view = node.documents.view(doc_id)
        except UnknownDocument:
            return False
        return view.state is state and len(view.signatures) == signatures

    return check


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="meshchat-contract-") as scratch:
        folder = Path(scratch)
        people = {name: Identity.generate() for name in NAMES}
        for name, identity in people.items():
            (folder / name).mkdir()
            save_identity(folder / name / KEY_FILE_NAME, identity, None)  # unencrypted: an example
        async with AsyncExitStack() as stack:
            nodes: dict[str, Node] = {}
            for name in NAMES:
                opening = Node.open(folder / name, listen=LOCAL, dht=False, store_config=FAST_RETRY)
                nodes[name] = await stack.enter_async_context(opening)
            for name, node in nodes.items():  # everyone adds the others' invites (a QR code, a link)
                for other, other_node in nodes.items():
                    if other != name:
                        invite = Invite.create(people[other], name=other, addrs=other_node.listen_addrs)
                        node.contacts.add(invite.to_text())
            anna, ben, chloe = (nodes[name] for name in NAMES)

            # 1. Anna proposes the contract: all three are signers, two signatures are needed.
            proposed = await anna.documents.propose(
                CONTRACT, name="contract.txt", signers=["Ben", "Chloe"], threshold=2
            )
            doc_id = proposed.doc_id
            print(f"Anna proposed contract.txt ({doc_id}), rule: 2 of 3 (Anna, Ben, Chloe)")
            await until_all(nodes, has(doc_id, DocumentState.OPEN, 0))
            print_status(nodes, doc_id)

            # 2. Ben reads it and signs.
            assert ben.documents.content(doc_id) == CONTRACT  # the text came with the proposal
            await ben.documents.sign(doc_id)
            await until_all(nodes, has(doc_id, DocumentState.OPEN, 1))
            print("Ben signed")
            print_status(nodes, doc_id)

            # 3. Chloe signs: two of three, the contract is signed (Anna's signature is not needed).
            await chloe.documents.sign(doc_id)
            await until_all(nodes, has(doc_id, DocumentState.COMPLETE, 2))
            print("Chloe signed")
            print_status(nodes, doc_id)

            # 4. Ben exports the bundle; anyone checks it offline against the contract's bytes.
            bundle = ben.documents.bundle(doc_id)
            (folder / "contract.cosign.json").write_text(bundle)
            report = verify_bundle(bundle, digest=digest_bytes(CONTRACT), now=time.time())
            who = {people[n].public.peer_id: n for n in NAMES}
            signers = sorted(who[s.signer.peer_id] for s in report.signatures)
            print(
                f"bundle ({len(bundle):,} bytes) verified offline: complete={report.complete}, "
                f"signed by {' and '.join(signers)}"
            )
            altered = CONTRACT.replace(b"equally", b"unequally")
            try:
                verify_bundle(bundle, digest=digest_bytes(altered), now=time.time())
            except DocumentMismatch as exc:
                print(f"an altered contract is refused: {exc}")


if __name__ == "__main__":
    trio.run(main)
