"""``meshchat node | chat | send | mailbox``: the commands that go on the network.

This is their command line half: options, the profile and its passphrase. The node itself runs in
``meshchat.cli.runner``, imported only when one of these commands runs, because trio and py-libp2p take
most of a second to import and ``meshchat --help`` should not wait for them.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from meshchat.cli.common import (
    CommandError,
    MailboxOption,
    ProfileOption,
    UsageError,
    check_profile_free,
    load_profile_identity,
    profile_dir,
    quiet_libp2p,
)
from meshchat.cli.contacts import refuse_changed_key
from meshchat.i18n import _

__all__ = ["chat_command", "mailbox_command", "node_command", "send_command"]

ListenOption = Annotated[
    list[str] | None,
    typer.Option(metavar="MULTIADDR", help=_("Listen here (repeatable; default /ip4/0.0.0.0/tcp/0).")),
]
BootstrapOption = Annotated[
    list[str] | None,
    typer.Option(metavar="MULTIADDR", help=_("Dial at start; ends in /p2p/<PeerId> (repeatable).")),
]
EventsJsonOption = Annotated[bool, typer.Option("--json", help=_("Print one JSON object per event."))]
EventsAfterOption = Annotated[
    int | None,
    typer.Option(
        "--events-after",
        metavar="N",
        min=0,
        help=_("First print the received messages numbered after N (the last `number` you handled)."),
    ),
]


def _run_on_network(
    profile: Path | None, listen: list[str] | None, bootstrap: list[str] | None, run: Any, **options: Any
) -> None:
    """Check the profile is not in use, load its identity and run ``run(folder, identity, listen=...,
    bootstrap=..., **options)`` under trio (the shared start of ``node``, ``send``, ``chat`` and
    ``mailbox``)."""
    import trio  # noqa: PLC0415

    from meshchat.node import DEFAULT_LISTEN  # noqa: PLC0415 (py-libp2p takes ~0.6 s to import)

    # py-libp2p logs every failed redial of a peer that left at ERROR level on stderr; meshchat counts
    # what matters in its own statistics. $MESHCHAT_LIBP2P_LOG (a level name) shows them again.
    quiet_libp2p()
    folder = profile_dir(profile)
    check_profile_free(folder)  # before the passphrase: a busy profile is refused without asking
    identity = load_profile_identity(folder)
    listen_on = listen if listen is not None else list(DEFAULT_LISTEN)
    call = functools.partial(run, folder, identity, listen=listen_on, bootstrap=bootstrap or [], **options)
    trio.run(call)


def _run_node(
    profile: Path | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    json_output: bool,
    **options: Any,
) -> None:
    """``run_node`` with no topics and no stdin unless ``options`` say otherwise (chat, mailbox)."""
    from meshchat.cli.runner import run_node  # noqa: PLC0415

    settings: dict[str, Any] = {"mdns": False, "topics": [], "signed_topics": [], "read_stdin": False}
    _run_on_network(
        profile, listen, bootstrap, run_node, json_lines=json_output, out=sys.stdout, **(settings | options)
    )


def node_command(
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mdns: Annotated[bool, typer.Option("--mdns", help=_("Find peers on the local network (mDNS)."))] = False,
    topic: Annotated[
        list[str] | None, typer.Option(metavar="NAME", help=_("Join this gossip topic (repeatable)."))
    ] = None,
    signed_topic: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME", help=_("Join this topic with StrictSign (signed by authors; repeatable).")
        ),
    ] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", help=_("Publish each line of standard input to the first topic."))
    ] = False,
    relay: Annotated[
        bool, typer.Option("--relay", help=_("Join every inbox shard, to carry everyone's sealed messages."))
    ] = False,
    circuit_relay: Annotated[
        bool, typer.Option("--circuit-relay", help=_("Relay connections for peers behind NAT (circuit v2)."))
    ] = False,
    reserve: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help=_("Reserve a slot on this circuit relay; print the address.")),
    ] = None,
    auto_relay: Annotated[
        bool,
        typer.Option(
            "--auto-relay/--no-auto-relay",
            help=_("Find circuit relays among peers while not reachable from outside; renew reservations."),
        ),
    ] = False,
    mailbox: MailboxOption = None,
    events_after: EventsAfterOption = None,
    json_output: EventsJsonOption = False,
    cover_interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", min=0.1, help=_("Send a dummy message every SECONDS on average (cover).")
        ),
    ] = None,
) -> None:
    """Run a node on the network until Ctrl-C: print its PeerId and addresses, then every event.
    It goes on delivering the profile's outbox and syncs its inbox from mailboxes."""
    topics = (topic or []) + (signed_topic or [])
    if stdin and not topics:
        raise CommandError(_("--stdin publishes to the first --topic (or --signed-topic); give one"))
    _run_node(
        profile,
        listen,
        bootstrap,
        json_output,
        mdns=mdns,
        topics=topics,
        signed_topics=signed_topic or [],
        read_stdin=stdin,
        relay=relay,
        circuit_relay=circuit_relay,
        reserve=reserve or [],
        mailboxes=mailbox or [],
        events_after=events_after,
        cover_interval=cover_interval,
        auto_relay=auto_relay,
    )


def send_command(
    text: Annotated[
        str | None, typer.Argument(metavar="TEXT", help=_("The message (or give --file)."))
    ] = None,
    *,
    to: Annotated[str, typer.Option("--to", metavar="CONTACT", help=_("Contact name or PeerId."))],
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="PATH", help=_("Send this file (a photo, a voice note...).")),
    ] = None,
    caption: Annotated[str, typer.Option(metavar="TEXT", help=_("With --file: the file's caption."))] = "",
    timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", min=0.1, help=_("With --file: give up after this long (default 600).")
        ),
    ] = None,
    profile: ProfileOption = None,
    listen: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help=_("Listen here (default: nowhere; it only dials out).")),
    ] = None,
    bootstrap: Annotated[
        list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))
    ] = None,
    mailbox: MailboxOption = None,
    json_output: Annotated[bool, typer.Option("--json", help=_("Print one JSON object on stdout."))] = False,
) -> None:
    """Send one sealed message to a contact: it waits in the outbox until a peer on their shard (or a
    --mailbox) has it, and, when that is the contact itself, a few seconds for their receipt;
    `meshchat status` and `meshchat outbox` then show where it is. With --file PATH it sends a file
    and stays up (a progress bar on stderr) until the contact fetched it or a mailbox holds it all."""
    if file is not None:
        from meshchat.cli.files import send_file  # noqa: PLC0415

        send_file(
            text,
            to=to,
            path=file,
            caption=caption,
            timeout=timeout,
            profile=profile,
            listen=listen,
            bootstrap=bootstrap,
            mailboxes=mailbox or [],
            json_output=json_output,
        )
        return
    if text is None or caption or timeout is not None:
        raise UsageError(_("give the message TEXT (--caption and --timeout go with --file PATH)"))
    refuse_changed_key(profile, to)  # a changed key: the warning, before the passphrase
    from meshchat.cli.runner import run_send  # noqa: PLC0415

    # A one-shot send dials out and leaves: listening on every interface would open a port for
    # nothing and record, in addresses.json, addresses that die with it (and go into the next invite).
    _run_on_network(
        profile,
        listen or [],
        bootstrap,
        run_send,
        to=to,
        text=text,
        json_lines=json_output,
        out=sys.stdout,
        mailboxes=mailbox or [],
    )


def chat_command(
    *,
    to: Annotated[
        str | None, typer.Option("--to", metavar="CONTACT", help=_("Contact name or PeerId."))
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", metavar="GROUP", help=_("Talk to this group (name or hex id) instead.")),
    ] = None,
    profile: ProfileOption = None,
    listen: Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Listen here."))] = None,
    bootstrap: Annotated[
        list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))
    ] = None,
    mailbox: MailboxOption = None,
    events_after: EventsAfterOption = None,
    json_output: EventsJsonOption = False,
    # chat with people on the same LAN when the Internet is cut
    mdns: Annotated[bool, typer.Option("--mdns", help=_("Find peers on the local network (mDNS)."))] = False,
) -> None:
    """Talk to a contact (--to) or a group (--group): each line you type goes to them sealed, in order;
    what anyone sends you is printed."""
    if (to is None) == (group is None):
        raise UsageError(_("give one of --to CONTACT or --group GROUP"))
    if group is not None:
        from meshchat.cli.group_runner import run_group_chat  # noqa: PLC0415

        _run_on_network(
            profile,
            listen,
            bootstrap,
            run_group_chat,
            group=group,
            json_lines=json_output,
            out=sys.stdout,
            mailboxes=mailbox or [],
            events_after=events_after,
        )
        return
    if to is not None:  # (given: --group returned above)
        refuse_changed_key(profile, to)
    _run_node(
        profile,
        listen,
        bootstrap,
        json_output,
        read_stdin=True,
        chat_with=to,
        mailboxes=mailbox or [],
        events_after=events_after,
        mdns=mdns,
    )


def mailbox_command(
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: Annotated[
        list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))
    ] = None,
    quota_tag: Annotated[
        int | None,
        typer.Option(metavar="BYTES", help=_("Bytes held per recipient inbox tag (default: 8 MiB).")),
    ] = None,
    quota_peer: Annotated[
        int | None, typer.Option(metavar="BYTES", help=_("Bytes held per sending peer (default: 64 MiB)."))
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(metavar="BYTES", help=_("Bytes held in total, the disk budget (default: 1 GiB).")),
    ] = None,
    json_output: EventsJsonOption = False,
    # a mailbox on a laptop finds the nodes of whichever LAN it is plugged into
    mdns: Annotated[bool, typer.Option("--mdns", help=_("Find peers on the local network (mDNS)."))] = False,
) -> None:
    """Run a mailbox until Ctrl-C: keep sealed envelopes for offline recipients (it cannot read them)
    until they sync or the envelopes expire, within per-recipient, per-sender and total quotas."""
    from meshchat.store.mailbox import MailboxLimits  # noqa: PLC0415

    given = {"per_tag_bytes": quota_tag, "per_peer_bytes": quota_peer, "total_bytes": budget}
    if any(value is not None and value <= 0 for value in given.values()):
        raise CommandError(_("--quota-tag, --quota-peer and --budget must be positive byte counts"))
    # Unset options keep MailboxLimits' defaults (the help names them; a test keeps the two in step).
    limits = MailboxLimits(**{k: v for k, v in given.items() if v is not None})
    _run_node(profile, listen, bootstrap, json_output, mailbox_limits=limits, mdns=mdns)
