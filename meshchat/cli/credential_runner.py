"""The network half of ``meshchat credential request | issue | revoke``: a short-lived ``Node`` under
trio (imported only when one of them runs: trio and py-libp2p take most of a second to import).

Each opens a node on the profile as ``meshchat send`` does, makes its change through
``node.credentials`` (durable in ``credentials.db`` before anything goes out), and waits, at most
``SEND_TIMEOUT`` seconds:

- ``request`` and ``issue``: until their control message left (``relayed``, or ``stored`` with
  ``--mailbox``), then briefly (``RECEIPT_WAIT``) for the receipt. What could not leave stays queued
  in the outbox and ``meshchat node`` sends it later; the command then fails saying so (exit 1).
  ``request --wait S`` then keeps the node up to ``S`` seconds more for the issuer's answer and prints
  the credential when it comes.
- ``issue`` and ``revoke``: publish the issuer's status lists (freshly signed) on its status topic to
  the peers on it (verifiers that trust this issuer, reached with ``--bootstrap``), waiting until the
  first peer there took them. Nobody there is not a failure: the revocation is made, and every
  ``meshchat node`` of this profile republishes the lists (to each new subscriber, and every 10 min).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import trio

from meshchat.cli.runner import RECEIPT_WAIT, SEND_TIMEOUT, _Printer
from meshchat.credential_api import CredentialReceived
from meshchat.credentials.status import status_topic
from meshchat.errors import NetworkError
from meshchat.i18n import _
from meshchat.identity import Identity, PublicIdentity
from meshchat.net.store_driver import MessageHandle
from meshchat.node import Node
from meshchat.store.storage import OutboxStatus

__all__ = ["run_credential_issue", "run_credential_request", "run_credential_revoke"]

_LEFT = (OutboxStatus.RELAYED, OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ)


async def _deliver(node: Node, handle: MessageHandle, recipient: PublicIdentity, *, stored: bool) -> str:
    """Wait (bounded) until the control left; its status. ``NetworkError`` if it did not."""
    contact = node.contacts.by_key(recipient)
    with trio.move_on_after(SEND_TIMEOUT):
        if contact is not None:
            await node.reach(contact)
        await handle.wait_until(OutboxStatus.STORED if stored else OutboxStatus.RELAYED)
    if handle.status in (OutboxStatus.RELAYED, OutboxStatus.STORED):
        with trio.move_on_after(RECEIPT_WAIT):
            await handle.wait_until(OutboxStatus.DELIVERED)
    if handle.status not in _LEFT:
        who = contact.name if contact is not None else recipient.peer_id
        raise NetworkError(
            f"send to {who}",
            f"done in this profile, but nobody took the message in {SEND_TIMEOUT:g} s; message "
            f"{handle.message_id.hex()} is {handle.status.value} in the outbox and `meshchat node` "
            "retries it",
        )
    return handle.status.value


async def _publish_status(node: Node) -> int:
    """Publish our status tokens to the peers on our status topic (bounded); how many peers took them."""
    topic = status_topic(node.credentials.did)
    taken = 0
    with trio.move_on_after(SEND_TIMEOUT):
        if node.host.get_network().connections:  # someone to meet there (else nobody can be)
            await node.wait_for(lambda: bool(node.driver.router.topic_peers(topic)))
        for token in node.credentials.status_tokens():
            taken = max(taken, await node.driver.publish_and_flush(topic, token.encode("ascii")))
    return taken


async def run_credential_request(
    profile: Path,
    identity: Identity,
    *,
    issuer: str,
    vct: str,
    note: str,
    wait: float,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_lines: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Ask ``issuer`` for a ``vct`` credential; with ``wait`` also wait that long for it."""
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        if wait > 0:  # a node that waits: where the issuer can reach it (as `meshchat node` says)
            printer.event(
                "listening",
                _("{peer_id} on {listen_addrs}").format(
                    peer_id=node.peer_id, listen_addrs=", ".join(node.listen_addrs)
                ),
                peer_id=node.peer_id,
                addrs=node.listen_addrs,
            )
        public = node.credentials.person(issuer)
        handle = node.credentials.request(public, vct, note=note)
        status = await _deliver(node, handle, public, stored=bool(mailboxes))
        fields = {"issuer": node.credentials.name_of(public), "vct": vct, "status": status}
        printer.event(
            "requested",
            _("a {vct} credential from {issuer}: {status}").format(
                vct=vct, issuer=fields["issuer"], status=status
            ),
            **fields,
        )
        if wait <= 0:
            return
        received: CredentialReceived | None = None
        with trio.move_on_after(wait):
            async for event in node.events():
                if isinstance(event, CredentialReceived) and event.vct == vct:
                    received = event
                    break
        if received is None:
            raise NetworkError(
                f"request to {fields['issuer']}",
                f"no credential came in {wait:g} s; it lands in the wallet when the issuer sends it "
                "while `meshchat node` runs on this profile",
            )
        [credential] = [c for c in node.credentials.held() if c.credential_id == received.credential_id]
        printer.event(
            "received",
            _("{credential_id} {vct} from {issuer}: {claims}").format(
                credential_id=credential.credential_id,
                vct=vct,
                issuer=fields["issuer"],
                claims=", ".join(credential.claims),
            ),
            credential_id=credential.credential_id,
            issuer_did=credential.issuer_did,
            vct=vct,
            claims=credential.claims,
        )


async def run_credential_issue(
    profile: Path,
    identity: Identity,
    *,
    to: str,
    vct: str,
    claims: Mapping[str, object],
    valid_days: float | None,
    birth_date: datetime.date | None,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_lines: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Issue against ``to``'s pending request, send it, publish the status lists."""
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        holder = node.credentials.person(to)
        credential, handle = node.credentials.issue(
            holder, vct=vct, claims=claims, valid_days=valid_days, birth_date=birth_date
        )
        status = await _deliver(node, handle, holder, stored=bool(mailboxes))
        published = await _publish_status(node)
        name = node.credentials.name_of(holder)
        printer.event(
            "issued",
            _("{credential_id} {vct} to {name} ({claims}): {status}").format(
                credential_id=credential.credential_id,
                vct=vct,
                name=name,
                claims=", ".join(credential.claims),
                status=status,
            ),
            credential_id=credential.credential_id,
            to=holder.peer_id,
            contact=name,
            vct=vct,
            claims=credential.claims,
            expires=credential.expires,
            status=status,
            status_published_to=published,
            issuer_did=node.credentials.did,
        )


async def run_credential_revoke(
    profile: Path,
    identity: Identity,
    *,
    credential_id: str,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_lines: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Revoke a credential we issued and publish the new status list."""
    printer = _Printer(out, json_lines=json_lines)
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        record = node.credentials.revoke(credential_id)
        published = await _publish_status(node)
        text = _("{credential_id} revoked; status list published to {published} peer(s)").format(
            credential_id=record.credential_id, published=published
        )
        if not published:
            text += _(" (none on the topic now: `meshchat node` on this profile publishes it)")
        printer.event(
            "revoked",
            text,
            credential_id=record.credential_id,
            vct=record.vct,
            status_index=record.status_index,
            status_published_to=published,
        )
