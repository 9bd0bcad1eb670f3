"""What ``meshchat node`` prints for credential events (``cli.credentials.describe_credential_event``)."""

from __future__ import annotations

from meshchat.cli.credentials import describe_credential_event
from meshchat.credential_api import CredentialReceived, CredentialRequested, StatusReceived
from meshchat.credentials.wallet import PendingRequest
from meshchat.identity import Identity


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def event(self, kind: str, text: str, **fields: object) -> None:
        self.lines.append((kind, text, fields))


def test_credential_events_print_one_line_each_with_names_and_escaped_text() -> None:
    holder = Identity(bytes([7]) * 32).public
    stranger = Identity(bytes([8]) * 32).public
    printer = _Lines()
    request = PendingRequest(
        nonce="n1",
        requester=holder.ed25519,
        holder=bytes(32),
        vct="diploma",
        note="for my job",
        stranger=False,
        received_at=1.0,
    )
    odd = PendingRequest(
        nonce="n2",
        requester=stranger.ed25519,
        holder=bytes(32),
        vct="x\x1b[2Jy",
        note="",
        stranger=True,
        received_at=2.0,
    )
    events = [
        CredentialRequested(request=request),
        CredentialRequested(request=odd),
        CredentialReceived(credential_id="abc123", issuer_did="did:key:z6Mk1", vct="diploma"),
        StatusReceived(issuer_did="did:key:z6Mk1", issued_at=1_780_000_000.0),
    ]
    for event in events:
        assert describe_credential_event(event, printer, names={holder.peer_id: "Ann"})
    assert not describe_credential_event(object(), printer, names={})
    (k1, t1, f1), (k2, t2, f2), (k3, _, f3), (k4, t4, f4) = printer.lines
    assert k1 == "credential_requested"
    assert t1.startswith("Ann asks for a 'diploma' credential: meshchat credential issue --to ")
    assert f1["contact"] == "Ann" and f1["note"] == "for my job" and f1["stranger"] is False
    assert k2 == "credential_requested"
    assert "\x1b" not in t2 and "(not a contact)" in t2 and stranger.peer_id in t2
    assert f2["vct"] == "x\x1b[2Jy"  # JSON carries it exactly; the text line escapes it
    assert (k3, f3["credential_id"], f3["issuer"]) == ("credential_received", "abc123", "did:key:z6Mk1")
    assert (k4, f4["issued_at"]) == ("status_received", 1_780_000_000.0)
    assert t4 == "status list of did:key:z6Mk1 signed at 1780000000"
