"""``meshchat contact list | verify | accept-key | rename | block | unblock | blocked``: the profile's
contacts, how far each key was checked, the user's names for them, and whom they blocked.

These read and write ``contacts.json`` (``meshchat.contacts``) and run no node; no passphrase is asked
(the contacts file is not encrypted). ``list`` and ``blocked`` work while a node runs on the profile;
the others refuse then (``ProfileLocked``): a running node keeps the contacts in memory and would
write over the change. Stop it first (or change contacts through the daemon's ``contacts.*`` methods).

Verification: ``meshchat safety-number NAME`` shows the number to compare with the person (in person,
or on a call you trust); ``contact verify NAME`` records that it matched. When a contact's key changes
(``meshchat add --replace``), the contact shows as *changed* and ``meshchat send`` refuses until
``contact accept-key NAME`` (you saw the warning) or ``contact verify NAME``. A contact is named by
the name shown (its petname if you gave one, else the name its invite claims) or its PeerId;
``block`` and ``unblock`` also take a stranger's PeerId.

With ``--json`` each command prints one JSON object: a contact is ``{"peer_id", "name",
"claimed_name", "petname", "verification", "blocked", "fingerprint"}`` (the daemon's form).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import (
    JsonOption,
    ProfileOption,
    UsageError,
    check_profile_free,
    emit_json,
    profile_dir,
    require_key_file,
    stderr_console,
    stdout_console,
    terminal_markup,
)
from meshchat.i18n import N_, _

if TYPE_CHECKING:
    from meshchat.contacts import Contact, Contacts

__all__ = ["contact_app", "contact_json", "refuse_changed_key"]

contact_app = typer.Typer(
    name="contact",
    help=_("Your contacts: list them, verify their keys, name them, block people."),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

WhoArgument = Annotated[
    str,
    typer.Argument(metavar="CONTACT", help=_("The contact's name (as `contact list` shows it) or PeerId.")),
]

#: How each verification state reads in ``contact list`` (translated where shown).
_STATE_TEXT = {
    "unverified": N_("unverified"),
    "verified": N_("verified"),
    "changed": N_("KEY CHANGED"),
}


def _open(profile: Path | None, *, change: bool) -> Contacts:
    """The profile's contacts; for a ``change``, only while no node runs on it."""
    from meshchat.contacts import Contacts  # noqa: PLC0415 (the wire layer's crypto, when a command runs)

    folder = profile_dir(profile)
    require_key_file(folder)
    if change:
        check_profile_free(folder)
    return Contacts(folder)


def contact_json(contact: Contact, contacts: Contacts) -> dict[str, object]:
    """``contact`` as ``--json`` (and the daemon) show it."""
    return {
        "peer_id": contact.peer_id,
        "name": contact.name,
        "claimed_name": contact.claimed_name,
        "petname": contact.petname,
        "verification": contact.verification.value,
        "blocked": contacts.is_blocked(contact.public),
        "fingerprint": contact.public.fingerprint,
    }


def refuse_changed_key(profile: Path | None, who: str) -> None:
    """Before ``meshchat send`` or ``chat`` opens a node: if ``who`` is a contact whose key changed and
    was not accepted, print the warning and refuse (``KeyNotConfirmed``, exit status 1)."""
    from meshchat.contacts import Contacts, Verification  # noqa: PLC0415
    from meshchat.errors import KeyNotConfirmed, UnknownPeer  # noqa: PLC0415

    folder = profile_dir(profile)
    try:
        contact = Contacts(folder).find(who)
    except UnknownPeer:
        return  # the node says so, as before
    if contact.verification is Verification.CHANGED:
        stderr_console().print(
            "[yellow]"
            + _(
                "warning: the safety number of {name} changed: their key is not the one you had (a new "
                "phone, or someone else). Compare it with them (meshchat safety-number {name}), then run "
                "meshchat contact accept-key {name} (or contact verify {name}) and send again."
            ).format(name=terminal_markup(contact.name))
            + "[/]"
        )
        raise KeyNotConfirmed(contact.name, contact.public.fingerprint)


def list_command(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """List your contacts: the name shown, the name their invite claims, whether you verified their key."""
    contacts = _open(profile, change=False)
    if json_output:
        emit_json({"contacts": [contact_json(c, contacts) for c in contacts]})
        return
    out = stdout_console()
    if not len(contacts):
        out.print(_("no contacts yet (meshchat add INVITE)"))
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(box=None, pad_edge=False)
    for header in (_("name"), _("their invite says"), _("key"), _("blocked"), _("PeerId")):
        table.add_column(header)
    for contact in contacts:
        state = _(_STATE_TEXT[contact.verification.value])
        claimed = contact.claimed_name if contact.petname is not None else ""
        table.add_row(
            terminal_markup(contact.name),
            terminal_markup(claimed),
            f"[red bold]{state}[/]" if contact.verification.value == "changed" else state,
            _("blocked") if contacts.is_blocked(contact.public) else "",
            contact.peer_id,
        )
    out.print(table)


def _done(contacts: Contacts, contact: Contact, text: str, json_output: bool) -> None:
    if json_output:
        emit_json(contact_json(contact, contacts))
    else:
        stdout_console().print(text)


def verify_command(
    who: WhoArgument, *, profile: ProfileOption = None, json_output: JsonOption = False
) -> None:
    """Record that you compared CONTACT's safety number (meshchat safety-number) and it matched."""
    contacts = _open(profile, change=True)
    contact = contacts.verify(who)
    _done(
        contacts,
        contact,
        _("{name}'s key is marked verified").format(name=terminal_markup(contact.name)),
        json_output,
    )


def accept_key_command(
    who: WhoArgument, *, profile: ProfileOption = None, json_output: JsonOption = False
) -> None:
    """Accept CONTACT's changed key (you saw the warning): sending to them works again, unverified."""
    contacts = _open(profile, change=True)
    contact = contacts.accept_key(who)
    _done(
        contacts,
        contact,
        _("{name}'s new key is accepted (unverified: compare the safety number to verify it)").format(
            name=terminal_markup(contact.name)
        ),
        json_output,
    )


def rename_command(
    who: WhoArgument,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help=_("Your name for them (or give --clear)."))
    ] = None,
    *,
    clear: Annotated[
        bool, typer.Option("--clear", help=_("Forget your name for them: show the name their invite claims."))
    ] = False,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Give CONTACT your own name for them (a petname), shown instead of the name their invite claims."""
    if (name is None) == (not clear):
        raise UsageError(_("give the new NAME, or --clear"))
    contacts = _open(profile, change=True)
    contact = contacts.rename(who, None if clear else name)
    _done(contacts, contact, _("now shown as {name}").format(name=terminal_markup(contact.name)), json_output)


def block_command(
    who: WhoArgument, *, profile: ProfileOption = None, json_output: JsonOption = False
) -> None:
    """Block CONTACT (or a stranger's PeerId): their messages are dropped unread and get no receipt."""
    contacts = _open(profile, change=True)
    contacts.block(who)
    if json_output:
        emit_json({"peer_id": _peer_id(contacts, who), "blocked": True})
    else:
        stdout_console().print(_("blocked {who}").format(who=terminal_markup(who)))


def unblock_command(
    who: WhoArgument, *, profile: ProfileOption = None, json_output: JsonOption = False
) -> None:
    """Let CONTACT's (or a PeerId's) messages in again, from now on."""
    contacts = _open(profile, change=True)
    contacts.unblock(who)
    if json_output:
        emit_json({"peer_id": _peer_id(contacts, who), "blocked": False})
    else:
        stdout_console().print(_("unblocked {who}").format(who=terminal_markup(who)))


def _peer_id(contacts: Contacts, who: str) -> str:
    """The PeerId ``who`` names (a contact's name or PeerId, or a stranger's PeerId, as ``block`` took)."""
    from meshchat.errors import UnknownPeer  # noqa: PLC0415

    try:
        return contacts.find(who).peer_id
    except UnknownPeer:
        return who


def blocked_command(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """List the people you blocked (contacts by name, strangers by PeerId)."""
    contacts = _open(profile, change=False)
    blocked = contacts.blocked()
    names = {p.peer_id: (c.name if (c := contacts.by_key(p)) is not None else None) for p in blocked}
    if json_output:
        emit_json({"blocked": [{"peer_id": p.peer_id, "name": names[p.peer_id]} for p in blocked]})
        return
    out = stdout_console()
    if not blocked:
        out.print(_("nobody is blocked"))
    for public in blocked:
        name = names[public.peer_id]
        out.print(public.peer_id if name is None else f"{terminal_markup(name)} ({public.peer_id})")


contact_app.command(
    "list",
    help=_(
        "List your contacts: the name shown, the name their invite claims, whether you verified their key."
    ),
)(list_command)
contact_app.command(
    "verify",
    help=_("Record that you compared CONTACT's safety number (meshchat safety-number) and it matched."),
)(verify_command)
contact_app.command(
    "accept-key",
    help=_("Accept CONTACT's changed key (you saw the warning): sending to them works again, unverified."),
)(accept_key_command)
contact_app.command(
    "rename",
    help=_("Give CONTACT your own name for them (a petname), shown instead of the name their invite claims."),
)(rename_command)
contact_app.command(
    "block",
    help=_("Block CONTACT (or a stranger's PeerId): their messages are dropped unread and get no receipt."),
)(block_command)
contact_app.command("unblock", help=_("Let CONTACT's (or a PeerId's) messages in again, from now on."))(
    unblock_command
)
contact_app.command(
    "blocked", help=_("List the people you blocked (contacts by name, strangers by PeerId).")
)(blocked_command)
