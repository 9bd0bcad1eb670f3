"""``meshchat group create | invite | join | members | remove | leave | rename | promote | demote | send
| history | list``: groups from the command line.

A group is named by its name or its id in hex (16 digits, as the commands print it, or any unique
prefix); a member by a contact's name or a PeerId. Members show as their contact name, else the end
of their PeerId; ``--json`` gives PeerIds and contact names.

Three kinds of command, with the conventions of the others (``--profile``, the passphrase from
``$MESHCHAT_PASSPHRASE`` or a prompt, ``--json`` printing exactly one JSON object, ``error: ...`` and
exit status 1 on failure):

- **Changes that go out** (``create NAME --member CONTACT ...``, ``invite``, ``remove``, ``leave``,
  ``rename``, ``promote``, ``demote``, ``send``) open a node on the profile as ``meshchat send`` does
  (``--listen``, default nowhere; ``--bootstrap``; ``--mailbox``), make the change (durable at once)
  and wait, at most ``SEND_TIMEOUT`` seconds, until what it produced left: invitations, chain
  handouts and removal notices on the sealed 1:1 path ``relayed`` (``stored`` with ``--mailbox``),
  the group message ``stored`` or ``delivered`` (``meshchat.cli.group_runner``). What could not leave
  stays queued and ``meshchat node`` sends it later; the command then fails saying so (exit 1), as
  ``meshchat send`` does. Like ``send``, they refuse a profile whose node is running (stop it first).
- **Accepting an invitation** (``join``) is local: it needs the profile free, not the network (a
  member's chain handouts come when members send); ``meshchat node`` then follows the group.
- **Reads** (``members``, ``history``, ``list``) open ``groups.db`` directly, without trio or
  py-libp2p (a fraction of a second), even while the profile's node runs.

Group events reach ``meshchat node`` and ``meshchat chat`` as ``group_message``, ``group_changed``,
``group_invited``, ``group_status`` lines (``meshchat.cli.group_events``); ``meshchat chat --group
NAME`` sends each typed line to the group.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import (
    JsonOption,
    MailboxOption,
    ProfileOption,
    UsageError,
    check_profile_free,
    emit_json,
    load_profile_identity,
    profile_dir,
    stdout_console,
    terminal_markup,
)
from meshchat.cli.group_events import history_json, label, short_id, view_json
from meshchat.cli.store import names_of
from meshchat.errors import UnknownGroup
from meshchat.i18n import _

if TYPE_CHECKING:
    from rich.table import Table

    from meshchat.cli.group_runner import Change
    from meshchat.groups.core import GroupsCore, GroupView
    from meshchat.groups.storage import GroupMessageRecord

__all__ = ["group_app"]

group_app = typer.Typer(
    name="group",
    help=_("Groups: create, invite, join, send, read; members and admins."),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

GroupArgument = Annotated[str, typer.Argument(metavar="GROUP", help=_("Group name or hex id (prefix)."))]
MemberArgument = Annotated[str, typer.Argument(metavar="MEMBER", help=_("Contact name or PeerId."))]
ListenOption = Annotated[
    list[str] | None,
    typer.Option(metavar="MULTIADDR", help=_("Listen here (default: nowhere; it only dials out).")),
]
BootstrapOption = Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))]


# --- changes that go out --------------------------------------------------------------------------


def _change(  # noqa: PLR0917 (the options every change command shares, in order)
    change: Change,
    profile: Path | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    mailbox: list[str] | None,
    json_output: bool,
) -> None:
    """Run ``change`` on a node of the profile (``meshchat.cli.group_runner.run_group_change``)."""
    from meshchat.cli.group_runner import run_group_change  # noqa: PLC0415 (trio, py-libp2p)
    from meshchat.cli.network import _run_on_network  # noqa: PLC0415

    _run_on_network(
        profile,
        listen or [],  # a one-shot command dials out and leaves, as `meshchat send`
        bootstrap,
        run_group_change,
        change=change,
        json_lines=json_output,
        out=sys.stdout,
        mailboxes=mailbox or [],
    )


def _check_name(name: str) -> None:
    """``UsageError`` (exit 2, before any work) for a name no group may have."""
    from meshchat.groups.ops import name_problem  # noqa: PLC0415 (the rule CREATE and RENAME enforce)

    problem = name_problem(name)
    if problem is not None:
        raise UsageError(_("group {problem}").format(problem=problem))


def _make(kind: str, group: str, **fields: object) -> Change:
    from meshchat.cli.group_runner import Change, ChangeKind  # noqa: PLC0415

    return Change(kind=ChangeKind(kind), group=group, **fields)  # type: ignore[arg-type]


@group_app.command(
    "create",
    help=_("Create a group with you as its admin; each --member gets an invitation (`group join` accepts)."),
)
def create_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help=_("The group's name (1-64 bytes)."))],
    *,
    member: Annotated[
        list[str] | None,
        typer.Option("--member", "-m", metavar="CONTACT", help=_("Invite this contact (repeatable).")),
    ] = None,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a group with you as its admin; each --member gets an invitation (`group join` accepts)."""
    _check_name(name)
    change = _make("create", name, members=tuple(member or ()))
    _change(change, profile, listen, bootstrap, mailbox, json_output)


@group_app.command("invite", help=_("Add a member (admins only); they get an invitation."))
def invite_command(
    group: GroupArgument,
    member: MemberArgument,
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a member (admins only); they get an invitation."""
    _change(_make("invite", group, member=member), profile, listen, bootstrap, mailbox, json_output)


@group_app.command("remove", help=_("Remove a member (admins only): they read nothing sent after."))
def remove_command(
    group: GroupArgument,
    member: MemberArgument,
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a member (admins only): they read nothing sent after."""
    _change(_make("remove", group, member=member), profile, listen, bootstrap, mailbox, json_output)


@group_app.command("promote", help=_("Make a member an admin (admins only)."))
def promote_command(
    group: GroupArgument,
    member: MemberArgument,
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a member an admin (admins only)."""
    _change(_make("promote", group, member=member), profile, listen, bootstrap, mailbox, json_output)


@group_app.command("demote", help=_("Take a member's admin role (admins only)."))
def demote_command(
    group: GroupArgument,
    member: MemberArgument,
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Take a member's admin role (admins only)."""
    _change(_make("demote", group, member=member), profile, listen, bootstrap, mailbox, json_output)


@group_app.command("rename", help=_("Rename the group (admins only)."))
def rename_command(
    group: GroupArgument,
    new_name: Annotated[str, typer.Argument(metavar="NEW_NAME", help=_("The new name (1-64 bytes)."))],
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Rename the group (admins only)."""
    _check_name(new_name)
    _change(_make("rename", group, members=(new_name,)), profile, listen, bootstrap, mailbox, json_output)


@group_app.command("leave", help=_("Leave the group: the others are told; you read nothing sent after."))
def leave_command(
    group: GroupArgument,
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Leave the group: the others are told; you read nothing sent after."""
    _change(_make("leave", group), profile, listen, bootstrap, mailbox, json_output)


@group_app.command(
    "send",
    help=_(
        "Send one message to the group (one envelope for every member).\n"
        "\n"
        'It waits until a mailbox stored it or the members online received it ("delivered to N of M").'
    ),
)
def send_command(
    group: GroupArgument,
    text: Annotated[str, typer.Argument(metavar="TEXT", help=_("The message."))],
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Send one message to the group (one envelope for every member).

    It waits until a mailbox stored it or the members online received it ("delivered to N of M")."""
    _change(_make("send", group, text=text), profile, listen, bootstrap, mailbox, json_output)


# --- local: join, and the reads -------------------------------------------------------------------


@contextlib.contextmanager
def _groups(profile: Path, *, create: bool = False) -> Iterator[GroupsCore | None]:
    """The profile's groups core on ``groups.db`` (None if the profile never had a group and
    ``create`` is False), without the network."""
    from meshchat.groups.core import GroupsCore  # noqa: PLC0415
    from meshchat.groups.sqlite import GROUPS_FILE, SqliteGroupStorage  # noqa: PLC0415
    from meshchat.store.encrypted import store_key  # noqa: PLC0415

    identity = load_profile_identity(profile)
    path = profile / GROUPS_FILE
    if not create and not path.exists():
        yield None
        return
    with SqliteGroupStorage(path, key=store_key(identity)) as storage:
        yield GroupsCore(identity, storage, wall_now=time.time())


def _found(core: GroupsCore | None, group: str) -> tuple[GroupsCore, bytes]:
    if core is None:
        raise UnknownGroup(group)
    return core, core.find(group)


@group_app.command(
    "join",
    help=_(
        "Accept an invitation.\n"
        "\n"
        "Local: it needs the profile's node stopped, not the network; the profile's next `meshchat node`\n"
        "or `meshchat chat` follows the group."
    ),
)
def join_command(
    group: GroupArgument,
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Accept an invitation.

    Local: it needs the profile's node stopped, not the network; the profile's next `meshchat node`
    or `meshchat chat` follows the group."""
    from meshchat.profile import hold_profile  # noqa: PLC0415

    folder = profile_dir(profile)
    check_profile_free(folder)  # before the passphrase, as the network commands
    with hold_profile(folder), _groups(folder) as maybe:
        core, group_id = _found(maybe, group)
        core.join(group_id, wall_now=time.time())
        view = core.view(group_id)
        me = core.me
    names = names_of(folder)
    if json_output:
        emit_json(view_json(view, names, me))
        return
    stdout_console().print(
        _("joined {name} ({group_id}): {count} members").format(
            name=terminal_markup(view.name), group_id=short_id(view.group_id), count=len(view.members)
        )
    )


@group_app.command("members", help=_("A group's name, your status in it, its members and admins."))
def members_command(
    group: GroupArgument,
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """A group's name, your status in it, its members and admins."""
    folder = profile_dir(profile)
    with _groups(folder) as maybe:
        core, group_id = _found(maybe, group)
        view, me = core.view(group_id), core.me
    names = names_of(folder)
    if json_output:
        emit_json(view_json(view, names, me))
    else:
        stdout_console().print(_members_table(view, names, me))


@group_app.command(
    "history",
    help=_("A group's messages (yours included), oldest first, each once, numbered in arrival order."),
)
def history_command(
    group: GroupArgument,
    *,
    profile: ProfileOption = None,
    after: Annotated[int, typer.Option(min=0, help=_("Only messages numbered after this one."))] = 0,
    limit: Annotated[int, typer.Option(min=1, help=_("Show at most this many."))] = 100,
    json_output: JsonOption = False,
) -> None:
    """A group's messages (yours included), oldest first, each once, numbered in arrival order."""
    folder = profile_dir(profile)
    with _groups(folder) as maybe:
        core, group_id = _found(maybe, group)
        view, records = core.view(group_id), core.history(group_id, after=after, limit=limit)
        me = core.me
    names = names_of(folder)
    if json_output:
        emit_json(
            {
                "group_id": view.group_id.hex(),
                "name": view.name,
                "history": [history_json(r, names) for r in records],
            }
        )
    else:
        stdout_console().print(_history_table(view, records, names, me))


@group_app.command("list", help=_("Every group of the profile (joined, invited, left, removed)."))
def list_command(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """Every group of the profile (joined, invited, left, removed)."""
    folder = profile_dir(profile)
    with _groups(folder) as core:
        views = core.groups() if core is not None else []
    if json_output:
        emit_json(
            {
                "groups": [
                    {
                        "group_id": v.group_id.hex(),
                        "name": v.name,
                        "status": v.status.value,
                        "members": len(v.members),
                        "admins": len(v.admins),
                    }
                    for v in views
                ]
            }
        )
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_("groups"))
    for column in ("id", _("name"), _("status"), _("members"), _("admins")):
        table.add_column(column)
    for v in views:
        table.add_row(
            short_id(v.group_id),
            terminal_markup(v.name),
            v.status.value,
            str(len(v.members)),
            str(len(v.admins)),
        )
    stdout_console().print(table)


def _members_table(view: GroupView, names: dict[str, str], me: bytes) -> Table:
    from rich.table import Table  # noqa: PLC0415

    data = view_json(view, names, me)
    table = Table(
        title=_("{name} ({group_id}, you: {status})").format(
            name=terminal_markup(view.name), group_id=short_id(view.group_id), status=view.status.value
        )
    )
    for column in (_("member"), "PeerId", _("role")):
        table.add_column(column)
    for member in data["members"]:  # type: ignore[attr-defined]
        role = "admin" if member["admin"] else "member"
        who = "you" if member["me"] else member["contact"] or ""
        table.add_row(terminal_markup(who), member["peer_id"], role)
    return table


def _history_table(
    view: GroupView, records: list[GroupMessageRecord], names: dict[str, str], me: bytes
) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"{terminal_markup(view.name)} ({short_id(view.group_id)})")
    for column in ("#", _("from"), _("received"), _("message")):
        table.add_column(column)
    for record in records:
        table.add_row(
            str(record.number),
            "you" if record.sender == me else terminal_markup(label(record.sender, names)),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.received_at)),
            terminal_markup(record.body.decode("utf-8", errors="replace"), multiline=True),
        )
    return table
