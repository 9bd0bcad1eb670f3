"""The network half of ``meshchat device link | approve | remove``: a ``Node`` under trio (imported only
when one of them runs). The command line half, and what a user types, is in ``meshchat.cli.devices``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import trio

from meshchat.cli.common import CommandError, stderr_console, terminal_markup, terminal_text
from meshchat.cli.identity import QR_PNG_SCALE
from meshchat.cli.runner import RECEIPT_WAIT
from meshchat.errors import NetworkError
from meshchat.i18n import _
from meshchat.identity import Identity
from meshchat.net.store_driver import MessageHandle
from meshchat.node import Node
from meshchat.store.storage import OutboxStatus

__all__ = ["run_approve", "run_link", "run_remove"]

_LEFT = (OutboxStatus.RELAYED, OutboxStatus.STORED, OutboxStatus.DELIVERED, OutboxStatus.READ)


def _line(out: TextIO, value: dict[str, object]) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")
    out.flush()


async def run_link(
    profile: Path,
    identity: Identity,
    *,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    name: str,
    qr: Path | None,
    timeout: float,  # noqa: ASYNC109 (a command line option handed on as is)
    json_lines: bool,
    out: TextIO,
) -> None:
    """Show a link request, wait (at most ``timeout``) for the primary's grant; the node takes the
    snapshot. ``NetworkError`` if no grant came."""
    err = stderr_console()
    async with Node.open(profile, identity=identity, listen=listen, bootstrap=bootstrap) as node:
        try:
            request = node.devices.link(name=name)
        except ValueError as exc:
            raise CommandError(_("cannot use --name: {exc}").format(exc=exc)) from exc
        code = request.code()
        text = request.to_text()
        if qr is not None:
            try:
                request.qr().save(str(qr), kind="png", scale=QR_PNG_SCALE)
            except OSError as exc:
                raise CommandError(
                    _("cannot write the QR code to {qr}: {exc}").format(qr=qr, exc=exc.strerror or exc)
                ) from exc
        if json_lines:
            _line(
                out,
                {
                    "event": "request",
                    "text": text,
                    "code": code,
                    "peer_id": node.peer_id,
                    "addrs": list(request.addrs),
                    "qr": None if qr is None else str(qr),
                },
            )
        else:
            out.write(text + "\n")
            out.flush()
        err.print(
            _(
                "Link code [bold]{code_start} {code_end}[/]. On your primary device run\n  meshchat device "
                "approve '<the request above>'\nand check that it shows the same code. Waiting for the "
                "approval (Ctrl-C to give up)..."
            ).format(code_start=code[:3], code_end=code[3:])
        )
        linked = await node.devices.wait_linked(timeout)
        root = linked.root.peer_id
        mine = next(d for d in linked.devices.devices if d.key == identity.public.ed25519)
        contacts = len(node.contacts)
        if json_lines:
            _line(
                out,
                {
                    "event": "linked",
                    "root": root,
                    "name": mine.name,
                    "contacts": contacts,
                    "devices": [
                        {"name": d.name, "peer_id": d.public.peer_id} for d in linked.devices.devices
                    ],
                },
            )
        else:
            out.write(_("linked to {root} as {name}\n").format(root=root, name=terminal_text(mine.name)))
            out.flush()
            err.print(
                _(
                    "[dim]{contacts} contacts copied; run `meshchat node` on this profile to receive.[/]"
                ).format(contacts=contacts)
            )


async def _left(handles: Sequence[MessageHandle], seconds: float) -> int:
    """Wait (at most ``seconds``) until every handle's message left (relayed or further); how many did."""
    with trio.move_on_after(seconds):
        for handle in handles:
            await handle.wait_until(OutboxStatus.RELAYED)
    return sum(h.status in _LEFT for h in handles)


async def run_approve(
    profile: Path,
    identity: Identity,
    *,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    text: str,
    primary_name: str,
    mailboxes: Sequence[str],
    wait: float,
    json_lines: bool,
    out: TextIO,
) -> None:
    """Approve the request ``text`` (its code was compared by the caller), wait (bounded) for the grant
    to reach the new device and the lists to leave. ``NetworkError`` if the grant could not."""
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        approved = await node.devices.approve(text, primary_name=primary_name, mailboxes=mailboxes)
        grant = approved.grant
        with trio.move_on_after(wait):
            await grant.wait_until(OutboxStatus.RELAYED)
        if grant.status in _LEFT:  # it has it (the only peer on its inbox shard): its receipt is quick
            with trio.move_on_after(RECEIPT_WAIT):
                await grant.wait_until(OutboxStatus.DELIVERED)
        told = await _left(approved.lists, wait)
        status = grant.status
        if status not in _LEFT:
            raise NetworkError(
                f"approve {approved.device.name}",
                f"the new device ({approved.device.public.peer_id}) could not be reached at the addresses in "
                "its request; it is "
                "linked, and its grant waits in the outbox: run `meshchat node` here while "
                "`meshchat device link` runs there",
            )
        if json_lines:
            _line(
                out,
                {
                    "event": "approved",
                    "name": approved.device.name,
                    "peer_id": approved.device.public.peer_id,
                    "version": approved.devices.version,
                    "grant": status.value,
                    "contacts": approved.contacts,
                    "left_out": approved.left_out,
                    "lists_sent": told,
                    "lists": len(approved.lists),
                },
            )
            return
        shown = f"{terminal_text(approved.device.name)} ({approved.device.public.peer_id})"
        out.write(_("approved {shown}: {status}\n").format(shown=shown, status=status.value))
        out.flush()
        _say_lists(told, len(approved.lists), approved.left_out)


def _say_lists(told: int, total: int, left_out: int = 0) -> None:
    err = stderr_console()
    if told < total:
        err.print(
            _(
                "[yellow]{missing} of {total} contacts have not got your new device list yet: it waits "
                "in the outbox; `meshchat node` sends it.[/]"
            ).format(missing=total - told, total=total)
        )
    if left_out:
        err.print(
            _(
                "[yellow]{left_out} contacts did not fit in what the new device got; add them there.[/]"
            ).format(left_out=left_out)
        )


async def run_remove(
    profile: Path,
    identity: Identity,
    *,
    listen: Sequence[str],
    bootstrap: Sequence[str],
    device: str,
    mailboxes: Sequence[str],
    wait: float,
    json_lines: bool,
    out: TextIO,
) -> None:
    """Remove ``device`` and wait (bounded) for the new list to leave for every contact."""
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        removed = node.devices.remove(device)
        told = await _left(removed.lists, wait)
        if json_lines:
            _line(
                out,
                {
                    "event": "removed",
                    "name": removed.device.name,
                    "peer_id": removed.device.public.peer_id,
                    "version": removed.devices.version,
                    "lists_sent": told,
                    "lists": len(removed.lists),
                },
            )
            return
        name = terminal_markup(removed.device.name)
        stderr_console().print(_("[dim]nothing sent from now on is sealed to {name}[/]").format(name=name))
        out.write(
            _("removed {name} ({peer_id})\n").format(
                name=terminal_text(removed.device.name), peer_id=removed.device.public.peer_id
            )
        )
        out.flush()
        _say_lists(told, len(removed.lists))
