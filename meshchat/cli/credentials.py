"""``meshchat credential request | issue | revoke | list | present | verify | trust | import``: credentials
(SD-JWT with selective disclosure) from the command line.

The flow: the holder asks (``credential request ISSUER --type diploma``: a control message to the
issuer carrying a proof of possession of a fresh holder key); the issuer's node keeps the request;
the issuer answers it (``credential issue --to HOLDER --type diploma --claim name=Ann ...``, optionally
``--predicates-from-birth-date 2001-04-02`` for ``age_over_18`` and friends, ``--days N``); the
credential lands in the holder's wallet (``credential list``) when the holder's node runs (or while
``request --wait`` waits). The holder shows chosen claims (``credential present ID --claim degree``,
answering a verifier's ``--nonce``/``--audience``, or ``--one-way`` for a 60-second window), as text
and ``--qr FILE.png``. A verifier who ``trust``s the issuer checks it offline (``credential verify
TEXT``), against the status lists its ``meshchat node`` received by gossip; the issuer revokes with
``credential revoke ID``. A verifier that is never online takes the issuer's status lists another way:
``credential import TOKEN`` (the issuer's ``credential list --json`` prints them, freshly signed).

Conventions of the other commands: ``--profile``, the passphrase from ``$MESHCHAT_PASSPHRASE`` or a
prompt (the wallet, ``credentials.db``, is encrypted with the identity's store key), ``--json``
printing exactly one JSON object, one ``error: ...`` line and exit status 1 on failure. ``request``,
``issue`` and ``revoke`` run a node briefly (``meshchat.cli.credential_runner``) and need the
profile's node stopped; the others are local and work while it runs.

``verify`` here runs once per process: its replay cache (a one-way presentation shown twice at one
till) lives only as long as the command, so a till app keeps one ``node.credentials`` (or
``Verifier``) running instead.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import (
    CommandError,
    JsonOption,
    MailboxOption,
    ProfileOption,
    UsageError,
    emit_json,
    load_profile_identity,
    profile_dir,
    stdout_console,
    terminal_markup,
    terminal_text,
)
from meshchat.i18n import _

if TYPE_CHECKING:
    from meshchat.cli.group_events import EventPrinter
    from meshchat.credential_api import Credentials
    from meshchat.credentials.credential import Verified
    from meshchat.identity import PublicIdentity

__all__ = ["credential_app", "describe_credential_event", "parse_claim"]

credential_app = typer.Typer(
    name="credential",
    help=_("Credentials: request, issue, hold, present, verify, revoke (SD-JWT, selective disclosure)."),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ListenOption = Annotated[
    list[str] | None,
    typer.Option(metavar="MULTIADDR", help=_("Listen here (default: nowhere; it only dials out).")),
]
BootstrapOption = Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))]
TypeOption = Annotated[str, typer.Option("--type", metavar="TYPE", help=_("The credential type (vct)."))]
#: Largest presentation file ``verify --file`` reads, bytes (a presentation is a few KiB).
MAX_PRESENTATION_FILE = 512 * 1024


def parse_claim(text: str) -> tuple[str, object]:
    """``name=value``: the value as JSON if it parses (numbers, true, lists), else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(_("a claim is NAME=VALUE, not {text!r}").format(text=text))
    try:
        parsed: object = json.loads(value)
    except ValueError:
        parsed = value
    return name, parsed


def _network(run: object, profile: Path | None, listen: list[str] | None, **options: object) -> None:
    from meshchat.cli.network import _run_on_network  # noqa: PLC0415 (trio, py-libp2p)

    bootstrap = options.pop("bootstrap", None)
    _run_on_network(profile, listen or [], bootstrap, run, out=sys.stdout, **options)  # type: ignore[arg-type]


@credential_app.command(
    "request",
    help=_(
        "Ask ISSUER for a credential of --type, bound to a new key of yours (the issuer's node keeps it)."
    ),
)
def request_command(
    issuer: Annotated[str, typer.Argument(metavar="ISSUER", help=_("Contact name, PeerId or did:key."))],
    *,
    vct: TypeOption,
    note: Annotated[str, typer.Option(help=_("A note for the issuer (who you are, what for)."))] = "",
    wait: Annotated[
        float, typer.Option(min=0, metavar="SECONDS", help=_("Then wait this long for the credential."))
    ] = 0,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Ask ISSUER for a credential of --type, bound to a new key of yours (the issuer's node keeps it)."""
    from meshchat.cli.credential_runner import run_credential_request  # noqa: PLC0415

    _network(
        run_credential_request,
        profile,
        listen,
        bootstrap=bootstrap,
        issuer=issuer,
        vct=vct,
        note=note,
        wait=wait,
        json_lines=json_output,
        mailboxes=mailbox or [],
    )


@credential_app.command(
    "issue", help=_("Issue a credential to HOLDER, answering their pending request of --type, and send it.")
)
def issue_command(
    *,
    to: Annotated[str, typer.Option("--to", metavar="HOLDER", help=_("Contact name, PeerId or did:key."))],
    vct: TypeOption,
    claim: Annotated[
        list[str] | None, typer.Option("--claim", metavar="NAME=VALUE", help=_("A claim (repeatable)."))
    ] = None,
    birth_date: Annotated[
        str | None,
        typer.Option(
            "--predicates-from-birth-date",
            metavar="YYYY-MM-DD",
            help=_("Add age_over_18 and age_over_21 computed from this date (the date itself is not added)."),
        ),
    ] = None,
    days: Annotated[
        float | None, typer.Option(min=0, help=_("Valid for this many days (default: no end)."))
    ] = None,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Issue a credential to HOLDER, answering their pending request of --type, and send it."""
    from meshchat.cli.credential_runner import run_credential_issue  # noqa: PLC0415

    claims = dict(parse_claim(c) for c in claim or [])
    born = None
    if birth_date is not None:
        try:
            born = datetime.date.fromisoformat(birth_date)
        except ValueError as exc:
            raise UsageError(
                _("--predicates-from-birth-date takes YYYY-MM-DD, not {birth_date!r}").format(
                    birth_date=birth_date
                )
            ) from exc
    if not claims and born is None:
        raise UsageError(_("give at least one --claim NAME=VALUE (or --predicates-from-birth-date)"))
    _network(
        run_credential_issue,
        profile,
        listen,
        bootstrap=bootstrap,
        to=to,
        vct=vct,
        claims=claims,
        valid_days=days,
        birth_date=born,
        json_lines=json_output,
        mailboxes=mailbox or [],
    )


@credential_app.command(
    "revoke",
    help=_("Revoke a credential you issued; the new status list goes to the verifiers on your status topic."),
)
def revoke_command(
    credential_id: Annotated[
        str, typer.Argument(metavar="ID", help=_("A credential you issued (or a prefix)."))
    ],
    *,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    json_output: JsonOption = False,
) -> None:
    """Revoke a credential you issued; the new status list goes to the verifiers on your status topic."""
    from meshchat.cli.credential_runner import run_credential_revoke  # noqa: PLC0415

    _network(
        run_credential_revoke,
        profile,
        listen,
        bootstrap=bootstrap,
        credential_id=credential_id,
        json_lines=json_output,
    )


# --- local -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _credentials(profile: Path | None) -> Iterator[Credentials]:
    """The profile's credentials on its wallet, without the network."""
    from meshchat.contacts import Contacts  # noqa: PLC0415
    from meshchat.credential_api import Credentials, open_wallet  # noqa: PLC0415

    folder = profile_dir(profile)
    identity = load_profile_identity(folder)
    with open_wallet(folder, identity) as wallet:
        yield Credentials.offline(identity, wallet, wall_clock=time.time, contacts=Contacts(folder))


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@credential_app.command(
    "trust", help=_("Trust an issuer: verify accepts its credentials; your node follows its status lists.")
)
def trust_command(
    did: Annotated[str, typer.Argument(metavar="DID", help=_("The issuer's did:key."))],
    *,
    name: Annotated[str, typer.Option(help=_("The name verifications show for it."))],
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Trust an issuer: verify accepts its credentials; your node follows its status lists."""
    with _credentials(profile) as credentials:
        credentials.trust(did, name)
    if json_output:
        emit_json({"trusted": did, "name": name})
    else:
        stdout_console().print(_("trusting {name} ({did})").format(name=terminal_markup(name), did=did))


@credential_app.command(
    "list",
    help=_("Your did, credentials held and issued, requests waiting (yours and holders'), trusted issuers."),
)
def list_command(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """Your did, credentials held and issued, requests waiting (yours and holders'), trusted issuers."""
    with _credentials(profile) as credentials:
        trusted = credentials.trusted()
        held = credentials.held()
        issued = credentials.issued()
        pending = credentials.requests()
        asked = credentials.own_requests()
        ages = {did: credentials.status_age(did) for did in trusted}
        requesters = {r.requester for r in issued} | {r.requester for r in pending}
        names = {key: credentials.name_of(_public(key)) for key in requesters}
        me = credentials.did
        tokens = credentials.status_tokens()  # an issuer's lists, signed now (for `credential import`)
    if json_output:
        emit_json(
            {
                "did": me,
                "held": [
                    {
                        "credential_id": c.credential_id,
                        "vct": c.vct,
                        "issuer_did": c.issuer_did,
                        "issuer": trusted.get(c.issuer_did),
                        "claims": c.claims,
                        "expires": c.expires,
                    }
                    for c in held
                ],
                "issued": [
                    {
                        "credential_id": r.credential_id,
                        "vct": r.vct,
                        "to": names[r.requester],
                        "revoked": r.revoked,
                        "issued_at": r.issued_at,
                    }
                    for r in issued
                ],
                "requests": [
                    {"from": names[r.requester], "vct": r.vct, "note": r.note, "stranger": r.stranger}
                    for r in pending
                ],
                "asked": [{"issuer_did": r.issuer_did, "vct": r.vct} for r in asked],
                "trusted": [{"did": d, "name": n, "status_age": ages[d]} for d, n in trusted.items()],
                "status_tokens": tokens,
            }
        )
        return
    console = stdout_console()
    console.print(_("your did: {me}").format(me=me))
    for c in held:
        who = terminal_markup(trusted.get(c.issuer_did) or c.issuer_did)
        claims = terminal_markup(", ".join(c.claims))
        console.print(
            _("held   {credential_id} {vct} from {who}: {claims}").format(
                credential_id=c.credential_id, vct=terminal_markup(c.vct), who=who, claims=claims
            )
        )
    for r in issued:
        state = "revoked" if r.revoked else "valid"
        to = terminal_markup(names[r.requester])
        console.print(
            _("issued {credential_id} {vct} to {to} ({state})").format(
                credential_id=r.credential_id, vct=terminal_markup(r.vct), to=to, state=state
            )
        )
    for p in pending:
        note = terminal_markup(p.note)
        console.print(
            _("request from {requester}: {vct} {note}").format(
                requester=terminal_markup(names[p.requester]), vct=terminal_markup(p.vct), note=note
            )
        )
    for own in asked:
        console.print(
            _("asked  {vct} from {issuer_did}").format(
                vct=terminal_markup(own.vct), issuer_did=own.issuer_did
            )
        )
    for did, name in trusted.items():
        age = ages[did]
        known = _("no status list yet") if age is None else _("status list {age:.0f} s old").format(age=age)
        console.print(
            _("trusted {name} ({did}): {known}").format(name=terminal_markup(name), did=did, known=known)
        )


@credential_app.command(
    "import",
    help=_(
        "Take a trusted issuer's status list token handed over offline (`credential list --json` of the\n"
        "issuer prints them), for a verifier that is never online."
    ),
)
def import_command(
    token: Annotated[str | None, typer.Argument(metavar="TOKEN", help=_("A status list token."))] = None,
    *,
    file: Annotated[
        Path | None, typer.Option("--file", help=_("Read tokens from this file, one a line."))
    ] = None,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Take a trusted issuer's status list token handed over offline (`credential list --json` of the
    issuer prints them), for a verifier that is never online."""
    if (token is None) == (file is None):
        raise UsageError(_("give the TOKEN or --file"))
    if token is not None:
        tokens = [token]
    else:
        assert file is not None
        tokens = _read(file).split()
    with _credentials(profile) as credentials:
        taken = [credentials.import_status(t) for t in tokens]
    if json_output:
        emit_json({"imported": sum(taken), "not_newer": len(taken) - sum(taken)})
    else:
        stdout_console().print(
            _("imported {taken} status list(s); {older} not newer").format(
                taken=sum(taken), older=len(taken) - sum(taken)
            )
        )


def _read(file: Path) -> str:
    """A small text file's content (a presentation, tokens); ``CommandError`` if it cannot be."""
    try:
        with file.open("rb") as source:
            raw = source.read(MAX_PRESENTATION_FILE + 1)
    except OSError as exc:
        raise CommandError(_("cannot read {file}: {exc}").format(file=file, exc=exc.strerror or exc)) from exc
    if len(raw) > MAX_PRESENTATION_FILE:
        raise CommandError(
            _("{file} is over {max_presentation_file:,} bytes").format(
                file=file, max_presentation_file=MAX_PRESENTATION_FILE
            )
        )
    return raw.decode("ascii", errors="replace")


def _public(key: bytes) -> PublicIdentity:
    from meshchat.identity import PublicIdentity  # noqa: PLC0415

    return PublicIdentity.from_bytes(key)


@credential_app.command(
    "present", help=_("Show chosen claims of a credential, bound to a verifier's challenge (or --one-way).")
)
def present_command(
    credential_id: Annotated[
        str, typer.Argument(metavar="ID", help=_("A credential you hold (or a prefix)."))
    ],
    *,
    claim: Annotated[
        list[str] | None, typer.Option("--claim", metavar="NAME", help=_("Disclose this claim (repeatable)."))
    ] = None,
    nonce: Annotated[str | None, typer.Option(help=_("The verifier's challenge."))] = None,
    audience: Annotated[str | None, typer.Option(help=_("The verifier (its did or name)."))] = None,
    one_way: Annotated[
        bool, typer.Option("--one-way", help=_("No challenge: valid for 60 s at any till that trusts it."))
    ] = False,
    qr: Annotated[
        Path | None, typer.Option("--qr", metavar="FILE.png", help=_("Also write a QR code."))
    ] = None,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show chosen claims of a credential, bound to a verifier's challenge (or --one-way)."""
    if one_way == (nonce is not None):
        raise UsageError(_("give --nonce (and --audience) for a challenge, or --one-way"))
    if nonce is not None and audience is None:
        raise UsageError(_("--nonce needs --audience (the verifier's did or name)"))
    if qr is not None and not qr.parent.expanduser().is_dir():
        raise UsageError(_("--qr: no folder {parent}").format(parent=qr.parent))
    with _credentials(profile) as credentials:
        disclose = claim or []
        if one_way and audience is None:
            text = credentials.present_one_way(credential_id, disclose)
        elif one_way:
            assert audience is not None
            text = credentials.present_one_way(credential_id, disclose, audience=audience)
        else:
            assert nonce is not None and audience is not None
            text = credentials.present(credential_id, disclose, nonce=nonce, audience=audience)
    payload = None
    if qr is not None:
        from meshchat.credentials.qr import qr_code, to_qr_text  # noqa: PLC0415 (segno)

        payload = to_qr_text(text)
        try:
            qr_code(text).save(str(qr.expanduser()), scale=4)
        except OSError as exc:
            raise CommandError(_("cannot write {qr}: {exc}").format(qr=qr, exc=exc.strerror or exc)) from exc
    if json_output:
        emit_json({"presentation": text, "qr_text": payload, "qr_file": None if qr is None else str(qr)})
    else:
        typer.echo(text)


@credential_app.command(
    "verify",
    help=_("Check a presentation offline: issuer (trusted), holder, challenge or window, dates, revocation."),
)
def verify_command(
    text: Annotated[
        str | None, typer.Argument(metavar="TEXT", help=_("The presentation (or MCVP1: QR text)."))
    ] = None,
    *,
    file: Annotated[
        Path | None, typer.Option("--file", help=_("Read the presentation from this file."))
    ] = None,
    nonce: Annotated[
        str | None, typer.Option(help=_("The challenge you gave (else: one-way window)."))
    ] = None,
    audience: Annotated[
        str | None, typer.Option(help=_("Who it must be addressed to (default: your did)."))
    ] = None,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check a presentation offline: issuer (trusted), holder, challenge or window, dates, revocation."""
    if (text is None) == (file is None):
        raise UsageError(_("give the presentation TEXT or --file"))
    if file is not None:
        text = _read(file)
    assert text is not None
    from meshchat.credentials.qr import QR_PREFIX, from_qr_text  # noqa: PLC0415 (segno)

    presentation = text.strip()
    if presentation.startswith(QR_PREFIX):
        presentation = from_qr_text(presentation)
    with _credentials(profile) as credentials:
        verified = credentials.verify(presentation, nonce=nonce, audience=audience)
    _print_verified(verified, json_output=json_output)


def _print_verified(verified: Verified, *, json_output: bool) -> None:
    fields: dict[str, object] = {
        "valid": True,
        "credential_id": verified.credential_id,
        "vct": verified.vct,
        "issuer_did": verified.issuer_did,
        "issuer": verified.issuer_name,
        "claims": verified.claims,
        "issued_at": verified.issued_at,
        "expires": verified.expires,
        "presented_at": verified.presented_at,
        "status": verified.status,
        "status_age": verified.status_age,
    }
    if json_output:
        emit_json(fields)
        return
    console = stdout_console()
    issuer = verified.issuer_name or verified.issuer_did
    console.print(
        _("valid {vct} credential issued by {issuer}").format(
            vct=terminal_markup(verified.vct), issuer=terminal_markup(issuer)
        )
    )
    for name, value in verified.claims.items():
        console.print(f"  {terminal_markup(name)}: {terminal_markup(json.dumps(value, ensure_ascii=False))}")
    if not verified.claims:
        console.print(_("  (no claim disclosed)"))
    age = (
        ""
        if verified.status_age is None
        else _(", status list {status_age:.0f} s old").format(status_age=verified.status_age)
    )
    console.print(
        _("status: {status}{age}; presented at {presented_at}").format(
            status=verified.status, age=age, presented_at=_when(verified.presented_at)
        )
    )


def describe_credential_event(event: object, printer: EventPrinter, *, names: dict[str, str]) -> bool:
    """Print a credential event (``credential_requested``, ``credential_received``,
    ``status_received``) as ``meshchat node`` shows it; False if ``event`` is not one. ``names``:
    contact names by PeerId."""
    from meshchat.credential_api import (  # noqa: PLC0415
        CredentialReceived,
        CredentialRequested,
        StatusReceived,
    )
    from meshchat.identity import PublicIdentity as Public  # noqa: PLC0415

    match event:
        case CredentialRequested(request=request):
            peer = Public.from_bytes(request.requester).peer_id
            who = terminal_text(names.get(peer, peer))
            printer.event(
                "credential_requested",
                _("{who} asks for a {vct!r} credential").format(who=who, vct=terminal_text(request.vct))
                + (_(" (not a contact)") if request.stranger else "")
                + _(": meshchat credential issue --to {peer} --type {vct}").format(
                    peer=peer, vct=terminal_text(request.vct)
                ),
                peer_id=peer,
                contact=names.get(peer),
                vct=request.vct,
                note=request.note,
                stranger=request.stranger,
            )
        case CredentialReceived(credential_id=cid, issuer_did=issuer, vct=vct):
            printer.event(
                "credential_received",
                _("a {vct!r} credential {cid} from {issuer} is in the wallet").format(
                    vct=terminal_text(vct), cid=cid, issuer=issuer
                ),
                credential_id=cid,
                issuer=issuer,
                vct=vct,
            )
        case StatusReceived(issuer_did=issuer, issued_at=issued_at):
            printer.event(
                "status_received",
                _("status list of {issuer} signed at {issued_at:.0f}").format(
                    issuer=issuer, issued_at=issued_at
                ),
                issuer=issuer,
                issued_at=issued_at,
            )
        case _:
            return False
    return True
