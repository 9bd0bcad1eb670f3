"""``meshchat sign | verify`` (offline) and ``meshchat cosign propose | list | status | sign | revoke |
export``: detached signatures and co-signing rounds (issue 16, CREDS.md A and C).

- ``meshchat sign FILE [--purpose P] [--out FILE.sig]`` signs the file's SHA-256 with the profile's
  identity key: one line of text (a compact JWS, ``meshchat.documents.signature``) in ``FILE.sig``.
  No network.
- ``meshchat verify FILE SIG`` checks ``SIG`` (a ``.sig``, or a co-signing round's bundle
  ``.cosign.json`` from ``cosign export``) against ``FILE`` with no network and no profile needed
  (a profile, when there is one, only names the signers who are contacts). It says who signed what and
  when; or, exit status 1, why not in one ``error:`` line (the typed error's message: an altered
  document, a garbled or forged signature, an unknown version; for a bundle, too few valid
  signatures for its rule).
- ``meshchat cosign propose FILE --signer NAME ... --need M`` starts a round: the proposal goes to
  every signer (and witness) as a control message; ``cosign sign ID`` adds this profile's signature
  (``--file PATH`` checks a document that did not travel inline), ``cosign revoke ID`` takes it back,
  ``cosign list`` / ``cosign status ID`` show the rounds (read from the profile, no network) and
  ``cosign export ID`` writes the bundle for ``meshchat verify``. The network commands start the
  profile's node briefly as ``meshchat send`` does (``meshchat.cli.cosign_runner``); what the profile
  receives while ``meshchat node`` runs (proposals, other signatures) is kept in its ``documents.db``.
"""

from __future__ import annotations

import contextlib
import datetime
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, assert_never

import typer

from meshchat.cli.common import (
    KEY_FILE,
    CommandError,
    JsonOption,
    MailboxOption,
    ProfileOption,
    UsageError,
    emit_json,
    load_profile_identity,
    profile_dir,
    public_identity,
    read_profile_name,
    require_key_file,
    terminal_markup,
    terminal_text,
)
from meshchat.i18n import _

if TYPE_CHECKING:
    from rich.console import Console

    from meshchat.cli.group_events import EventPrinter
    from meshchat.document_api import Documents
    from meshchat.documents.bundle import BundleReport
    from meshchat.documents.events import DocumentEvent, DocumentView
    from meshchat.documents.signature import SignatureInfo
    from meshchat.identity import PublicIdentity

__all__ = [
    "BUNDLE_SUFFIX",
    "DEFAULT_COSIGN_WAIT",
    "DOCUMENT_EVENTS",
    "MAX_BUNDLE_FILE",
    "MAX_SIGNATURE_FILE",
    "SIGNATURE_SUFFIX",
    "cosign_app",
    "describe_document_event",
    "sign_command",
    "verify_command",
]

#: What ``meshchat sign`` appends to the file's name for its signature, unless ``--out`` says.
SIGNATURE_SUFFIX = ".sig"
#: What ``cosign export`` appends to the document's name for its bundle.
BUNDLE_SUFFIX = ".cosign.json"
#: Largest ``.sig`` read, bytes: one JWS line is under a kilobyte (a 200-character purpose, a long
#: file name); anything far larger is not a signature and is refused before parsing.
MAX_SIGNATURE_FILE = 64 * 1024
#: Largest bundle read, bytes: ``meshchat.documents.bundle.MAX_BUNDLE_SIZE`` (512 KiB: 32 signatures,
#: 32 revocations, 320 stamps), spelled out so ``verify`` of a ``.sig`` does not import the bundle code.
MAX_BUNDLE_FILE = 512 * 1024
#: Seconds the network commands wait for what they sent to leave (stored on a mailbox or relayed);
#: what did not waits in the outbox for the next ``meshchat node``.
DEFAULT_COSIGN_WAIT = 20.0

cosign_app = typer.Typer(
    name="cosign",
    help=_("Co-sign a document with others: propose it with an M-of-N rule, sign, revoke, export."),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ListenOption = Annotated[
    list[str] | None,
    typer.Option(metavar="MULTIADDR", help=_("Listen here (default: nowhere; it only dials out).")),
]
BootstrapOption = Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait", metavar="SECONDS", min=0.1, help=_("Wait this long for what it sent to leave (default 20).")
    ),
]


def _console() -> Console:
    """Rich output on stdout: no highlighting, no emoji codes (a did:key holds ``:key:``), no wrapping
    inside a line (PeerIds and dids stay whole for copying)."""
    from rich.console import Console  # noqa: PLC0415

    return Console(highlight=False, emoji=False, soft_wrap=True)


def _when(seconds: float) -> str:
    """Unix time as people read it (UTC, to the second)."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _names(folder: Path | None) -> dict[str, str]:
    """Display names by PeerId: the profile's contacts and itself. A missing or unreadable profile only
    means no names: verifying needs none."""
    if folder is None or not (folder / KEY_FILE).is_file():
        return {}
    from meshchat.contacts import Contacts  # noqa: PLC0415
    from meshchat.errors import MeshchatError  # noqa: PLC0415

    names: dict[str, str] = {}
    with contextlib.suppress(MeshchatError, CommandError, OSError):
        names = {c.peer_id: c.name for c in Contacts(folder)}
        names[public_identity(folder).peer_id] = read_profile_name(folder) or "me"
    return names


def _read_text(path: Path, *, limit: int, what: str) -> str:
    """A signature or bundle file's text; ``TooLarge`` past ``limit``, ``CommandError`` if unreadable."""
    from meshchat.errors import DecodeError, TooLarge  # noqa: PLC0415

    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise CommandError(_("cannot read {path}: {exc}").format(path=path, exc=exc.strerror or exc)) from exc
    if len(data) > limit:
        raise TooLarge(what=what, size=path.stat().st_size, limit=limit)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError(what, "not UTF-8 text") from exc


#: The FILE that means standard input (``echo text | meshchat sign -``).
STDIN = "-"


def _digest(path: Path) -> tuple[str, int]:
    from meshchat.documents.signature import digest_file, digest_stream  # noqa: PLC0415

    if str(path) == STDIN:
        try:
            return digest_stream(sys.stdin.buffer)
        except OSError as exc:
            raise CommandError(
                _("cannot read standard input: {exc}").format(exc=exc.strerror or exc)
            ) from exc
    if not path.is_file():
        raise CommandError(_("{path} is not a file").format(path=path))
    try:
        return digest_file(path)
    except OSError as exc:
        raise CommandError(_("cannot read {path}: {exc}").format(path=path, exc=exc.strerror or exc)) from exc


def _write(path: Path, data: bytes) -> None:
    from meshchat.identity import replace_atomically  # noqa: PLC0415

    try:
        replace_atomically(path, data)
    except OSError as exc:
        raise CommandError(
            _("cannot write {path}: {exc}").format(path=path, exc=exc.strerror or exc)
        ) from exc


def _signer_json(public: PublicIdentity, did: str, names: dict[str, str]) -> dict[str, object]:
    return {"did": did, "peer_id": public.peer_id, "name": names.get(public.peer_id)}


def signature_json(info: SignatureInfo, names: dict[str, str]) -> dict[str, object]:
    """One signature as ``--json`` shows it."""
    return {
        "signer": _signer_json(info.signer, info.signer_did, names),
        "signed_at": int(info.signed_at),
        "digest": info.digest,
        "size": info.size,
        "name": info.name,
        "purpose": info.purpose,
        "cosign": info.cosign,
    }


def _who(public: PublicIdentity, names: dict[str, str]) -> str:
    name = names.get(public.peer_id)
    return f"{terminal_markup(name)} ({public.peer_id})" if name else public.peer_id


# --- sign / verify (offline) ----------------------------------------------------------------------


def sign_command(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help=_("The file to sign (- reads standard input)."))
    ],
    *,
    purpose: Annotated[
        str | None, typer.Option(metavar="TEXT", help=_("Why you sign (at most 200 characters), signed too."))
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE.sig",
            help=_("Where to write (default FILE.sig; for -, standard output)."),
        ),
    ] = None,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Sign FILE (or text on standard input) with this profile's key: a detached signature anyone can
    check offline."""
    piped = str(file) == STDIN
    target = out if out is not None or piped else file.with_name(file.name + SIGNATURE_SUFFIX)
    if target is not None and not target.parent.is_dir():
        raise UsageError(
            _("cannot write {target}: no folder {parent}").format(target=target, parent=target.parent)
        )
    if purpose is not None and len(purpose) > 200:
        raise UsageError(_("--purpose is at most 200 characters, not {count}").format(count=len(purpose)))
    folder = profile_dir(profile)
    require_key_file(folder)
    from meshchat.documents.signature import parse_signature, sign_digest  # noqa: PLC0415

    digest, size = _digest(file)
    identity = load_profile_identity(folder)
    name = None if piped else file.name
    text = sign_digest(identity, digest, size, now=time.time(), name=name, purpose=purpose)
    info = parse_signature(text)
    if target is None:  # text from a pipe, its signature to standard output
        if json_output:
            emit_json({"file": STDIN, "signature": text, **signature_json(info, _names(folder))})
        else:
            sys.stdout.write(text + "\n")
        return
    _write(target, (text + "\n").encode("ascii"))
    if json_output:
        emit_json({"file": str(file), "signature": str(target), **signature_json(info, _names(folder))})
        return
    _console().print(
        _("signed {name} (sha-256 {digest}, {size:,} bytes) -> {target}").format(
            name=terminal_markup(file.name),
            digest=info.digest,
            size=size,
            target=terminal_markup(str(target)),
        )
    )


def verify_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help=_("The document (- reads standard input)."))],
    signature: Annotated[
        Path,
        typer.Argument(metavar="SIG", help=_("Its signature (.sig) or co-signing bundle (.cosign.json).")),
    ],
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check a signature (or a co-signing bundle) against FILE, offline: who signed it and when."""
    digest, _size = _digest(file)
    folder = profile_dir(profile)  # only for names: verifying needs no profile
    names = _names(folder)
    text = _read_text(signature, limit=MAX_BUNDLE_FILE, what=_("signature file"))
    if text.startswith("{"):
        _verify_bundle(file, text, digest, names, json_output=json_output)
        return
    if len(text) > MAX_SIGNATURE_FILE:
        from meshchat.errors import TooLarge  # noqa: PLC0415

        raise TooLarge(what="signature", size=len(text), limit=MAX_SIGNATURE_FILE)
    from meshchat.documents.signature import verify_document  # noqa: PLC0415

    info = verify_document(digest, text)
    if json_output:
        emit_json({"file": str(file), "valid": True, **signature_json(info, names)})
        return
    out = _console()
    out.print(
        _("[green]valid[/]: {name} was signed by {signer}").format(
            name=terminal_markup(file.name), signer=_who(info.signer, names)
        )
    )
    out.print(_("  did        {signer_did}").format(signer_did=info.signer_did))
    out.print(_("  signed at  {signed_at} (the signer's own clock)").format(signed_at=_when(info.signed_at)))
    out.print(_("  sha-256    {digest} ({size:,} bytes)").format(digest=info.digest, size=info.size))
    if info.name is not None and info.name != file.name:
        out.print(_("  signed as  {name}").format(name=terminal_markup(info.name)))
    if info.purpose:
        out.print(_("  purpose    {purpose}").format(purpose=terminal_markup(info.purpose)))
    if info.cosign:
        out.print(_("  round      {cosign} (a co-signing round's signature)").format(cosign=info.cosign))


def _verify_bundle(file: Path, text: str, digest: str, names: dict[str, str], *, json_output: bool) -> None:
    """A co-signing bundle: every valid signature, the revoked and missing signers, and whether the
    round's M-of-N rule holds. Exit status 1 (after the report) when it does not."""
    from meshchat.documents.bundle import verify_bundle  # noqa: PLC0415

    report = verify_bundle(text, digest=digest, now=time.time())
    proposal = report.proposal
    value = bundle_json(report, names)
    if json_output:
        emit_json({"file": str(file), **value})
    else:
        out = _console()
        state = _("[green]complete[/]") if report.complete else _("[yellow]not complete[/]")
        out.print(
            _(
                "{state}: {name}, round {doc_id}, {count} of {threshold} needed signatures ({signers} "
                "signers), proposed by {proposer} at {created}"
            ).format(
                state=state,
                name=terminal_markup(file.name),
                doc_id=proposal.doc_id,
                count=len(report.signatures),
                threshold=proposal.threshold,
                signers=len(proposal.signers),
                proposer=_who(proposal.proposer, names),
                created=_when(proposal.created),
            )
        )
        bounds = report.signed_no_later_than
        for info in report.signatures:
            line = _("  signed   {signer} at {signed_at}").format(
                signer=_who(info.signer, names), signed_at=_when(info.signed_at)
            )
            bound = bounds.get(info.signer_did)
            if bound is not None:
                line += _(", witnessed no later than {bound}").format(bound=_when(bound))
            out.print(line)
        for public, at in report.revoked:
            out.print(_("  revoked  {public} at {at}").format(public=_who(public, names), at=_when(at)))
        for public in report.missing:
            out.print(_("  missing  {public}").format(public=_who(public, names)))
    if not report.complete:
        raise CommandError(
            _("round {doc_id} is not complete: {count} valid signature(s), {threshold} needed").format(
                doc_id=proposal.doc_id, count=len(report.signatures), threshold=proposal.threshold
            )
        )


def bundle_json(report: BundleReport, names: dict[str, str]) -> dict[str, object]:
    """A bundle's report as ``--json`` shows it."""
    from meshchat.wire.jose import did_key  # noqa: PLC0415

    proposal = report.proposal
    return {
        "valid": report.complete,
        "complete": report.complete,
        "doc_id": proposal.doc_id,
        "digest": proposal.digest,
        "threshold": proposal.threshold,
        "signers": [_signer_json(p, did_key(p), names) for p in proposal.signers],
        "proposer": _signer_json(proposal.proposer, did_key(proposal.proposer), names),
        "signatures": [signature_json(s, names) for s in report.signatures],
        "revoked": [
            {**_signer_json(p, did_key(p), names), "revoked_at": int(at)} for p, at in report.revoked
        ],
        "missing": [_signer_json(p, did_key(p), names) for p in report.missing],
        "signed_no_later_than": {k: int(v) for k, v in report.signed_no_later_than.items()},
        "expired": report.expired,
    }


# --- events of a running node ------------------------------------------------------------------------

#: The ``event`` values of co-signing lines (for ``meshchat node --json``: ``describe_document_event``).
DOCUMENT_EVENTS = frozenset(
    {"document_proposed", "document_signed", "document_revoked", "document_completed", "document_stamped"}
)


def describe_document_event(event: DocumentEvent, printer: EventPrinter, *, names: dict[str, str]) -> None:
    """One line for a co-signing event (what ``meshchat node`` prints): names of contacts, else
    PeerIds; JSON fields carry the round id and PeerIds. For ``meshchat.cli.runner._print_events``."""
    from meshchat.documents.events import (  # noqa: PLC0415
        DocumentCompleted,
        DocumentProposed,
        DocumentRevoked,
        DocumentSigned,
        DocumentStamped,
    )

    def who(public: PublicIdentity) -> str:
        return terminal_text(names.get(public.peer_id) or public.peer_id)

    match event:
        case DocumentProposed(view=view):
            proposal = view.proposal
            printer.event(
                "document_proposed",
                _("{proposer} proposed {name} ({doc_id}) to sign, {threshold} of {count}").format(
                    proposer=who(proposal.proposer),
                    name=terminal_text(proposal.name),
                    doc_id=proposal.doc_id,
                    threshold=proposal.threshold,
                    count=len(proposal.signers),
                ),
                doc_id=proposal.doc_id,
                name=proposal.name,
                proposer=proposal.proposer.peer_id,
                signers=[p.peer_id for p in proposal.signers],
                threshold=proposal.threshold,
                has_content=view.has_content,
            )
        case DocumentSigned(doc_id=doc_id, signer=signer):
            printer.event(
                "document_signed",
                _("{signer} signed {doc_id}").format(signer=who(signer), doc_id=doc_id),
                doc_id=doc_id,
                signer=signer.peer_id,
            )
        case DocumentRevoked(doc_id=doc_id, signer=signer):
            printer.event(
                "document_revoked",
                _("{signer} revoked their signature of {doc_id}").format(signer=who(signer), doc_id=doc_id),
                doc_id=doc_id,
                signer=signer.peer_id,
            )
        case DocumentCompleted(doc_id=doc_id):
            printer.event(
                "document_completed",
                _("{doc_id} is signed: its rule holds").format(doc_id=doc_id),
                doc_id=doc_id,
            )
        case DocumentStamped(doc_id=doc_id, signer=signer, witness=witness):
            printer.event(
                "document_stamped",
                _("{witness} witnessed {signer}'s signature of {doc_id}").format(
                    witness=who(witness), signer=who(signer), doc_id=doc_id
                ),
                doc_id=doc_id, signer=signer.peer_id, witness=witness.peer_id,
            )  # fmt: skip
        case _:
            assert_never(event)


# --- cosign: reading the profile (no network) -----------------------------------------------------


def view_json(view: DocumentView, names: dict[str, str]) -> dict[str, object]:
    """One round as ``cosign list`` / ``status`` / ``propose`` show it with ``--json``."""
    from meshchat.wire.jose import did_key  # noqa: PLC0415

    proposal = view.proposal
    return {
        "doc_id": proposal.doc_id,
        "name": proposal.name,
        "digest": proposal.digest,
        "size": proposal.size,
        "state": view.state.name.lower(),
        "threshold": proposal.threshold,
        "proposer": _signer_json(proposal.proposer, did_key(proposal.proposer), names),
        "created": int(proposal.created),
        "expires": None if proposal.expires is None else int(proposal.expires),
        "signers": [_signer_json(p, did_key(p), names) for p in proposal.signers],
        "signatures": [signature_json(s, names) for s in view.signatures],
        "revoked": [{**_signer_json(p, did_key(p), names), "revoked_at": int(at)} for p, at in view.revoked],
        "pending": [_signer_json(p, did_key(p), names) for p in view.pending],
        "witnesses": [_signer_json(p, did_key(p), names) for p in proposal.witnesses],
        "quorum": proposal.quorum,
        "signed_no_later_than": {k: int(v) for k, v in view.signed_by.items()},
        "has_content": view.has_content,
        "signed_by_me": view.signed_by_me,
    }


def print_view(view: DocumentView, names: dict[str, str], *, detail: bool) -> None:
    """One round as text: a line, and with ``detail`` every signer."""
    out = _console()
    proposal = view.proposal
    state = {"open": "[yellow]open[/]", "complete": "[green]complete[/]", "expired": "[red]expired[/]"}
    out.print(
        _("{doc_id}  {state}  {count}/{threshold} of {signers}  {name}  from {proposer}").format(
            doc_id=proposal.doc_id,
            state=state.get(view.state.name.lower(), view.state.name),
            count=len(view.signatures),
            threshold=proposal.threshold,
            signers=len(proposal.signers),
            name=terminal_markup(proposal.name),
            proposer=_who(proposal.proposer, names),
        )
    )
    if not detail:
        return
    out.print(_("  sha-256    {digest} ({size:,} bytes)").format(digest=proposal.digest, size=proposal.size))
    out.print(_("  proposed   {created}").format(created=_when(proposal.created)))
    if proposal.expires is not None:
        out.print(_("  expires    {expires}").format(expires=_when(proposal.expires)))
    signed = {s.signer.peer_id: s for s in view.signatures}
    revoked = {p.peer_id: at for p, at in view.revoked}
    for public in proposal.signers:
        info = signed.get(public.peer_id)
        if info is not None:
            what = _("signed {signed_at}").format(signed_at=_when(info.signed_at))
            bound = view.signed_by.get(info.signer_did)
            if bound is not None:
                what += _(" (witnessed no later than {bound})").format(bound=_when(bound))
        elif public.peer_id in revoked:
            what = _("revoked {when}").format(when=_when(revoked[public.peer_id]))
        else:
            what = _("pending")
        out.print(f"  {_who(public, names)}: {what}")
    if not view.has_content:
        out.print(_("  [dim]the document did not travel inline: sign with --file PATH[/]"))


def _open_local(profile: Path | None) -> tuple[Path, Documents]:
    """The profile folder and a ``Documents`` reading its ``documents.db`` without a network."""
    from meshchat.document_api import open_offline  # noqa: PLC0415

    folder = profile_dir(profile)
    require_key_file(folder)
    identity = load_profile_identity(folder)
    return folder, open_offline(folder, identity)


@cosign_app.command(
    "list", help=_("The co-signing rounds this profile knows (read from its documents.db; no network).")
)
def list_command(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """The co-signing rounds this profile knows (read from its documents.db; no network)."""
    folder, documents = _open_local(profile)
    with documents:
        views = documents.documents()
    names = _names(folder)
    if json_output:
        emit_json({"documents": [view_json(v, names) for v in views]})
        return
    if not views:
        _console().print(_("[dim]No co-signing rounds. Start one with `meshchat cosign propose`.[/]"))
    for view in views:
        print_view(view, names, detail=False)


@cosign_app.command(
    "status", help=_("One round: each signer's signature (or revocation), the rule, whether it is complete.")
)
def status_command(
    doc_id: Annotated[str, typer.Argument(metavar="ID", help=_("The round's id (from propose or list)."))],
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """One round: each signer's signature (or revocation), the rule, whether it is complete."""
    folder, documents = _open_local(profile)
    with documents:
        view = documents.view(doc_id)
    names = _names(folder)
    if json_output:
        emit_json(view_json(view, names))
        return
    print_view(view, names, detail=True)


@cosign_app.command(
    "export",
    help=_("Write the round's bundle (proposal, signatures, revocations, stamps) for `meshchat verify`."),
)
def export_command(
    doc_id: Annotated[str, typer.Argument(metavar="ID", help=_("The round's id."))],
    *,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE", help=_("Where to write (default NAME.cosign.json).")),
    ] = None,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the round's bundle (proposal, signatures, revocations, stamps) for `meshchat verify`."""
    _node_dir, documents = _open_local(profile)
    with documents:
        view = documents.view(doc_id)
        text = documents.bundle(doc_id)
    from meshchat.files.names import safe_name  # noqa: PLC0415

    target = out if out is not None else Path(safe_name(view.proposal.name) + BUNDLE_SUFFIX)
    if not target.parent.is_dir():
        raise UsageError(
            _("cannot write {target}: no folder {parent}").format(target=target, parent=target.parent)
        )
    _write(target, text.encode("utf-8") + b"\n")
    if json_output:
        emit_json(
            {"doc_id": view.proposal.doc_id, "bundle": str(target), "complete": view.state.name == "COMPLETE"}
        )
        return
    _console().print(
        _("exported {doc_id} -> {target}").format(
            doc_id=view.proposal.doc_id, target=terminal_markup(str(target))
        )
    )


# --- cosign: the network commands -----------------------------------------------------------------


def _run(
    profile: Path | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    run: object,
    **options: object,
) -> None:
    from meshchat.cli.network import _run_on_network  # noqa: PLC0415

    _run_on_network(profile, listen or [], bootstrap, run, out=sys.stdout, **options)


@cosign_app.command(
    "propose",
    help=_("Start a co-signing round: FILE goes to every signer (a file over 40 KiB as an attachment)."),
)
def propose_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help=_("The document to co-sign."))],
    *,
    signer: Annotated[
        list[str],
        typer.Option("--signer", "-s", metavar="NAME", help=_("A signer: contact name or PeerId (repeat).")),
    ],
    need: Annotated[
        int, typer.Option("--need", "-m", metavar="M", min=1, help=_("Signatures needed (M of N)."))
    ],
    witness: Annotated[
        list[str] | None, typer.Option("--witness", metavar="NAME", help=_("A timestamp witness (repeat)."))
    ] = None,
    quorum: Annotated[
        int, typer.Option(metavar="K", min=0, help=_("Witness stamps that bound a signing time (default 0)."))
    ] = 0,
    me: Annotated[bool, typer.Option("--me/--no-me", help=_("Whether you are one of the signers."))] = True,
    expires_days: Annotated[
        float | None,
        typer.Option("--expires-days", metavar="DAYS", min=0.01, help=_("Close the round after.")),
    ] = None,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    wait: WaitOption = DEFAULT_COSIGN_WAIT,
    json_output: JsonOption = False,
) -> None:
    """Start a co-signing round: FILE goes to every signer (a file over 40 KiB as an attachment)."""
    if not file.is_file():
        raise UsageError(_("{file} is not a file").format(file=file))
    from meshchat.cli.cosign_runner import Request, run_cosign  # noqa: PLC0415

    request = Request(
        verb="propose",
        path=file,
        signers=tuple(signer),
        threshold=need,
        witnesses=tuple(witness or ()),
        quorum=quorum,
        me=me,
        expires_days=expires_days,
    )
    _run(
        profile,
        listen,
        bootstrap,
        run_cosign,
        request=request,
        mailboxes=mailbox or [],
        wait=wait,
        json_output=json_output,
    )


@cosign_app.command("sign", help=_("Sign a round's document and send the signature to every participant."))
def cosign_sign_command(
    doc_id: Annotated[str, typer.Argument(metavar="ID", help=_("The round's id."))],
    *,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="PATH", help=_("The document, checked against the round.")),
    ] = None,
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    wait: WaitOption = DEFAULT_COSIGN_WAIT,
    json_output: JsonOption = False,
) -> None:
    """Sign a round's document and send the signature to every participant."""
    if file is not None and not file.is_file():
        raise UsageError(_("{file} is not a file").format(file=file))
    from meshchat.cli.cosign_runner import Request, run_cosign  # noqa: PLC0415

    request = Request(verb="sign", doc_id=doc_id, path=file)
    _run(
        profile,
        listen,
        bootstrap,
        run_cosign,
        request=request,
        mailboxes=mailbox or [],
        wait=wait,
        json_output=json_output,
    )


@cosign_app.command(
    "revoke", help=_("Take back your signature on a round's document, and tell every participant.")
)
def revoke_command(
    doc_id: Annotated[str, typer.Argument(metavar="ID", help=_("The round's id."))],
    *,
    reason: Annotated[str, typer.Option(metavar="TEXT", help=_("Why (sent with the revocation)."))] = "",
    profile: ProfileOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    wait: WaitOption = DEFAULT_COSIGN_WAIT,
    json_output: JsonOption = False,
) -> None:
    """Take back your signature on a round's document, and tell every participant."""
    from meshchat.cli.cosign_runner import Request, run_cosign  # noqa: PLC0415

    request = Request(verb="revoke", doc_id=doc_id, reason=reason)
    _run(
        profile,
        listen,
        bootstrap,
        run_cosign,
        request=request,
        mailboxes=mailbox or [],
        wait=wait,
        json_output=json_output,
    )
