"""The network half of ``meshchat cosign propose | sign | revoke``: a ``Node`` under trio (imported only
when one of them runs). The command line half is ``meshchat.cli.documents``.

Each command opens the profile's node as ``meshchat send`` does, makes its change through
``node.documents`` (durable in ``documents.db`` and the outbox before anything goes out), dials the
participants who are contacts and waits, at most ``--wait`` seconds, until every control message it
sent has left this machine: ``stored`` on a mailbox with ``--mailbox``, else ``relayed``; then, for
the participants it is connected to, briefly (``RECEIPT_WAIT``) ``delivered``. What did not leave
waits in the outbox for the next ``meshchat node`` (the command says so and exits 1).

``cosign sign ID`` on a profile that has not received the proposal yet (its node was not running when
it came) waits for it within ``--wait``: the node syncs its mailboxes as it starts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import trio

from meshchat.cli.common import CommandError
from meshchat.cli.runner import RECEIPT_WAIT
from meshchat.errors import NetworkError
from meshchat.i18n import _
from meshchat.identity import Identity
from meshchat.net.store_driver import MessageHandle
from meshchat.node import Node
from meshchat.store.storage import OutboxStatus

__all__ = ["Request", "run_cosign"]

_LEFT = frozenset({OutboxStatus.RELAYED, OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ})
_STORED = frozenset({OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ})
_DELIVERED = frozenset({OutboxStatus.DELIVERED, OutboxStatus.READ})
_FINAL = frozenset({OutboxStatus.EXPIRED, OutboxStatus.FAILED})


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One network command's arguments."""

    #: ``propose``, ``sign`` or ``revoke``.
    verb: str
    #: sign, revoke: the round.
    doc_id: str = ""
    #: propose: the document; sign: the file to check (optional).
    path: Path | None = None
    #: propose: the signers (contact names or PeerIds), the rule, witnesses, whether I sign too.
    signers: tuple[str, ...] = ()
    threshold: int = 1
    witnesses: tuple[str, ...] = ()
    quorum: int = 0
    me: bool = True
    expires_days: float | None = None
    #: revoke: why.
    reason: str = ""


def _all(handles: Sequence[MessageHandle], wanted: frozenset[OutboxStatus]) -> bool:
    return all(h.status in wanted or h.status in _FINAL for h in handles)


def _files_left(node: Node, attachments: Sequence[MessageHandle], peers: Sequence[str]) -> bool:
    """A large document's copies are safe to leave: on a mailbox, or served and no signer is still
    fetching (leaving earlier would cut a download short: this node is the only source then)."""
    for handle in attachments:
        progress = handle.progress
        if progress is None:
            continue
        if not progress.complete and progress.fetched < progress.total:
            return False
    return not any(node.files.driver.server.serving(peer) for peer in peers)


async def _apply(
    node: Node, request: Request, deadline: float
) -> tuple[str, list[MessageHandle], list[MessageHandle]]:
    """Make ``request``'s change: (the round's id, its control messages, a large document's files)."""
    documents = node.documents
    if request.verb == "propose":
        assert request.path is not None
        expires = None if request.expires_days is None else time.time() + request.expires_days * 86400
        try:
            proposed = await documents.propose(
                request.path,
                signers=list(request.signers),
                threshold=request.threshold,
                me=request.me,
                witnesses=list(request.witnesses),
                quorum=request.quorum,
                expires=expires,
            )
        except ValueError as exc:  # a round the core refuses to sign (--need beyond the signers)
            raise CommandError(_("cannot propose that round: {exc}").format(exc=exc)) from exc
        return proposed.doc_id, proposed.controls, proposed.attachments
    doc_id = request.doc_id
    if not documents.known(doc_id):  # not received yet: its mailboxes may hold it
        with trio.move_on_at(deadline):
            await node.wait_for(lambda: documents.known(doc_id))
    if request.verb == "sign":
        handles = await documents.sign(doc_id, path=request.path)
    else:
        handles = await documents.revoke(doc_id, reason=request.reason)
    return documents.view(doc_id).proposal.doc_id, handles, []


async def run_cosign(
    profile: Path,
    identity: Identity,
    *,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    request: Request,
    mailboxes: Sequence[str],
    wait: float,
    json_output: bool,
    out: TextIO,
) -> None:
    """Do ``request`` on a node of the profile and wait (bounded) for its controls to leave."""
    from meshchat.cli.documents import print_view, view_json  # noqa: PLC0415

    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        deadline = trio.current_time() + wait
        doc_id, handles, attachments = await _apply(node, request, deadline)
        proposal = node.documents.view(doc_id).proposal
        others = {p.ed25519 for p in (*proposal.signers, proposal.proposer, *proposal.witnesses)}
        contacts = [c for c in node.contacts if c.public.ed25519 in others]
        peers = [c.peer_id for c in contacts]
        wanted = _STORED if mailboxes else _LEFT
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                for contact in contacts:
                    nursery.start_soon(node.reach, contact)
                await node.wait_for(lambda: _all(handles + attachments, wanted))
                if attachments:
                    await node.wait_for(lambda: _files_left(node, attachments, peers))
                with trio.move_on_after(RECEIPT_WAIT):
                    await node.wait_for(lambda: _all(handles, _DELIVERED))
                nursery.cancel_scope.cancel()
        view = node.documents.view(doc_id)
        pending = [h for h in handles + attachments if h.status not in _LEFT]
        if attachments and not _files_left(node, attachments, peers):
            pending += [h for h in attachments if h not in pending]
        names = {c.peer_id: c.name for c in node.contacts}
        names[identity.public.peer_id] = "me"
        if json_output:
            value = {
                "event": request.verb,
                **view_json(view, names),
                "statuses": [h.status.value for h in handles + attachments],
            }
            out.write(json.dumps(value, ensure_ascii=False) + "\n")
            out.flush()
        else:
            out.write(f"{request.verb} {doc_id}\n")
            out.flush()
            print_view(view, names, detail=True)
        if pending:
            raise NetworkError(
                f"cosign {request.verb}",
                f"{len(pending)} of {len(handles) + len(attachments)} message(s) did not leave in {wait:g} s "
                "(they wait in the outbox; `meshchat node` sends them)",
            )
