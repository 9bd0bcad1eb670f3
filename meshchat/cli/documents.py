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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import (
    KEY_FILE,
    CommandError,
    JsonOption,
    ProfileOption,
    UsageError,
    emit_json,
    load_profile_identity,
    profile_dir,
    public_identity,
    read_profile_name,
    require_key_file,
    terminal_markup,
)

if TYPE_CHECKING:
    from rich.console import Console

    from meshchat.documents.signature import SignatureInfo
    from meshchat.identity import PublicIdentity

__all__ = [
    "BUNDLE_SUFFIX",
    "MAX_BUNDLE_FILE",
    "MAX_SIGNATURE_FILE",
    "SIGNATURE_SUFFIX",
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
#: Largest bundle read, bytes: 32 signers' signatures and revocations and up to 10 stamps each, about
#: a kilobyte apiece, fit many times over.
MAX_BUNDLE_FILE = 4 * 1024 * 1024
#: Seconds the network commands wait for what they sent to leave (stored on a mailbox or relayed);
#: what did not waits in the outbox for the next ``meshchat node``.
DEFAULT_COSIGN_WAIT = 20.0


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
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise TooLarge(what=what, size=path.stat().st_size, limit=limit)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError(what, "not UTF-8 text") from exc


def _digest(path: Path) -> tuple[str, int]:
    from meshchat.documents.signature import digest_file  # noqa: PLC0415

    if not path.is_file():
        raise CommandError(f"{path} is not a file")
    try:
        return digest_file(path)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _write(path: Path, data: bytes) -> None:
    from meshchat.identity import replace_atomically  # noqa: PLC0415

    try:
        replace_atomically(path, data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc


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
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The file to sign.")],
    *,
    purpose: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why you sign (at most 200 characters), signed too.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE.sig", help="Where to write (default FILE.sig)."),
    ] = None,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Sign FILE with this profile's key: a detached signature anyone can check offline."""
    target = out if out is not None else file.with_name(file.name + SIGNATURE_SUFFIX)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: no folder {target.parent}")
    if purpose is not None and len(purpose) > 200:
        raise UsageError(f"--purpose is at most 200 characters, not {len(purpose)}")
    folder = profile_dir(profile)
    require_key_file(folder)
    from meshchat.documents.signature import parse_signature, sign_digest  # noqa: PLC0415

    digest, size = _digest(file)
    identity = load_profile_identity(folder)
    text = sign_digest(identity, digest, size, now=time.time(), name=file.name, purpose=purpose)
    _write(target, (text + "\n").encode("ascii"))
    info = parse_signature(text)
    if json_output:
        emit_json({"file": str(file), "signature": str(target), **signature_json(info, _names(folder))})
        return
    _console().print(
        f"signed {terminal_markup(file.name)} (sha-256 {info.digest}, {size:,} bytes) -> "
        f"{terminal_markup(str(target))}"
    )


def verify_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The document.")],
    signature: Annotated[
        Path, typer.Argument(metavar="SIG", help="Its signature (.sig) or co-signing bundle (.cosign.json).")
    ],
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check a signature (or a co-signing bundle) against FILE, offline: who signed it and when."""
    digest, _ = _digest(file)
    folder = profile_dir(profile)  # only for names: verifying needs no profile
    names = _names(folder)
    text = _read_text(signature, limit=MAX_BUNDLE_FILE, what="signature file")
    if text.startswith("{"):
        raise CommandError(f"{signature} is a co-signing bundle; this meshchat reads only .sig files")
    if len(text) > MAX_SIGNATURE_FILE:
        from meshchat.errors import TooLarge  # noqa: PLC0415

        raise TooLarge(what="signature", size=len(text), limit=MAX_SIGNATURE_FILE)
    from meshchat.documents.signature import verify_document  # noqa: PLC0415

    info = verify_document(digest, text)
    if json_output:
        emit_json({"file": str(file), "valid": True, **signature_json(info, names)})
        return
    out = _console()
    out.print(f"[green]valid[/]: {terminal_markup(file.name)} was signed by {_who(info.signer, names)}")
    out.print(f"  did        {info.signer_did}")
    out.print(f"  signed at  {_when(info.signed_at)} (the signer's own clock)")
    out.print(f"  sha-256    {info.digest} ({info.size:,} bytes)")
    if info.name is not None and info.name != file.name:
        out.print(f"  signed as  {terminal_markup(info.name)}")
    if info.purpose:
        out.print(f"  purpose    {terminal_markup(info.purpose)}")
    if info.cosign:
        out.print(f"  round      {info.cosign} (a co-signing round's signature)")
