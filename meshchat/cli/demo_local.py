"""The local half of ``meshchat demo``: three profiles, invites and safety numbers, sealed messages,
what a relay sees of them, what fails as it should, and how long sealing and opening take.

Each step is a function taking what the previous ones produced and returning what it showed, so
``--json`` reports the same facts the narration prints. Nothing here is a protocol: it calls the
library the way an application would, and raises ``CommandError`` if a promise it shows does not hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from meshchat.cli.common import KEY_FILE, CommandError, load_profile_identity, write_profile
from meshchat.cli.demo import DEMO_MESSAGES, DEMO_TIMING_ROUNDS, Say, silent
from meshchat.cli.identity import safety_rows
from meshchat.crypto import open_envelope, seal
from meshchat.errors import DecryptionFailed, MeshchatError
from meshchat.i18n import _
from meshchat.identity import Identity, safety_number, save_identity
from meshchat.wire import Invite, decode_envelope, message_id

__all__ = ["DemoPerson", "run_demo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPerson:
    """One demo participant: a profile folder and the identity loaded back from it."""

    #: Display name, also written to the profile.
    name: str
    #: The profile folder.
    profile: Path
    #: The secret key, as loaded from the profile's key file.
    identity: Identity


def run_demo(workdir: Path, *, wall_now: float, console: Console | None) -> dict[str, object]:
    """Run the demo in ``workdir`` and return its summary; narrate it on ``console`` if one is given.

    Each step is its own function taking what the previous ones produced, so a step (a relay, a mailbox,
    a network of nodes) can be added without touching the others. Raises ``CommandError`` if any
    promise the demo shows does not hold.
    """
    say: Say = console.print if console is not None else silent
    say(Panel.fit(_("[bold]meshchat demo[/]: three people, sealed messages, and what a relay sees")))
    people = _demo_profiles(workdir, say)
    alice, bob, carol = people["Alice"], people["Bob"], people["Carol"]
    number, alice_card = _demo_invites(alice, bob, say)
    envelopes = [
        seal(alice.identity, bob.identity.public, text.encode(), wall_now=wall_now)
        for _, text in DEMO_MESSAGES
    ]
    relay_view = _demo_relay_view(envelopes, say)
    received = _demo_receive(bob, alice_card, envelopes, wall_now, say)
    attacks = _demo_attacks(bob, carol, envelopes[0], wall_now, say)
    timings = _demo_timings(alice, bob, wall_now, say)
    return {
        "safety_number": number,
        "messages": received,
        "relay_view": relay_view,
        **attacks,
        "timings_ms": timings,
    }


def _demo_profiles(workdir: Path, say: Say) -> dict[str, DemoPerson]:
    """Alice, Bob and Carol each get a profile folder, loaded back the way every command loads one."""
    people: dict[str, DemoPerson] = {}
    for name in ("Alice", "Bob", "Carol"):
        folder = workdir / name.lower()
        folder.mkdir(mode=0o700)
        write_profile(folder, name)
        # Demo only: no passphrase, so it runs unattended. `meshchat init` encrypts with argon2id.
        save_identity(folder / KEY_FILE, Identity.generate(), None)
        people[name] = DemoPerson(name=name, profile=folder, identity=load_profile_identity(folder))
    table = Table(title=_("1. three profiles"), title_justify="left")
    table.add_column(_("name"))
    table.add_column(_("PeerId"), overflow="fold")
    for person in people.values():
        table.add_row(person.name, person.identity.public.peer_id)
    say(table)
    say(
        _(
            "[dim]Key files saved WITHOUT a passphrase (demo only; `meshchat init` encrypts them) in a "
            "temporary folder deleted at the end.[/]"
        )
    )
    return people


def _demo_invites(alice: DemoPerson, bob: DemoPerson, say: Say) -> tuple[str, Invite]:
    """Alice and Bob swap invite tokens; each computes the safety number from their own side."""
    alice_token = Invite.create(alice.identity, name=alice.name).to_text()
    bob_token = Invite.create(bob.identity, name=bob.name).to_text()
    alice_card = Invite.from_text(alice_token)  # what Bob holds, signature verified
    bob_card = Invite.from_text(bob_token)  # what Alice holds, signature verified
    alice_sees = safety_number(alice.identity.public, bob_card.public)
    bob_sees = safety_number(bob.identity.public, alice_card.public)
    if alice_sees != bob_sees:
        raise CommandError(_("demo: Alice and Bob computed different safety numbers"))
    say(_("\n[bold]2. invites[/]: Alice and Bob swap signed invite tokens. Alice's begins:"))
    say(
        _("[dim]{alice_token}…[/] ({count} characters)").format(
            alice_token=alice_token[:56], count=len(alice_token)
        )
    )
    say(Panel(safety_rows(alice_sees), title=_("safety number: Alice's view = Bob's view"), expand=False))
    return alice_sees, alice_card


def _demo_relay_view(envelopes: list[bytes], say: Say) -> dict[str, object]:
    """Everything a relay or mailbox can learn from an envelope: routing data, no sender, no text."""
    data = envelopes[0]
    envelope = decode_envelope(data)
    expiry = datetime.fromtimestamp(envelope.expiry, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes = sorted({len(e) for e in envelopes})
    table = Table(title=_("3. what a relay sees of message 1"), title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row(
        _("size"),
        _("{count} bytes (every message here: {sizes}; padded)").format(
            count=len(data), sizes=", ".join(map(str, sizes))
        ),
    )
    table.add_row(_("kind"), envelope.kind.name)
    table.add_row(_("inbox tag"), _("{tag} (blinded, changes daily)").format(tag=envelope.inbox_tag.hex()))
    table.add_row(_("expiry"), f"{envelope.expiry} ({expiry})")
    table.add_row(_("message id"), message_id(data).hex())
    table.add_row(_("sender"), _("[green]not visible[/] (sealed inside)"))
    table.add_row(_("text"), _("[green]not visible[/]"))
    say(table)
    return {
        "size_bytes": len(data),
        "kind": envelope.kind.name,
        "inbox_tag": envelope.inbox_tag.hex(),
        "expiry": envelope.expiry,
        "message_id": message_id(data).hex(),
        "sender": "not visible",
    }


def _demo_receive(
    bob: DemoPerson, alice_card: Invite, envelopes: list[bytes], wall_now: float, say: Say
) -> list[dict[str, object]]:
    """Bob opens each envelope; the sender is named only if its verified key is the one in Alice's invite."""
    table = Table(title=_("4. Bob opens them"), title_justify="left")
    table.add_column("#")
    table.add_column(_("language"))
    table.add_column(_("verified sender"))
    table.add_column(_("text"))
    received: list[dict[str, object]] = []
    for number, ((language, text), data) in enumerate(zip(DEMO_MESSAGES, envelopes, strict=True), 1):
        message = open_envelope(bob.identity, data, wall_now=wall_now)
        sender = alice_card.name if message.sender == alice_card.public else "unknown key"
        body = message.body.decode("utf-8")
        if sender != alice_card.name or body != text:
            raise CommandError(
                _("demo: message {number} did not arrive intact from {name}").format(
                    number=number, name=alice_card.name
                )
            )
        table.add_row(
            str(number), language, _("[green]{sender} ✓[/]").format(sender=escape(sender)), escape(body)
        )
        received.append({"language": language, "text": body, "sender": sender, "verified": True})
    say(table)
    return received


def _demo_attacks(
    bob: DemoPerson, carol: DemoPerson, data: bytes, wall_now: float, say: Say
) -> dict[str, object]:
    """Carol, who is not the recipient, cannot open it; one flipped byte makes it unopenable for Bob too."""
    table = Table(title=_("5. what fails, as it should"), title_justify="left")
    table.add_column(_("attempt"))
    table.add_column(_("result"))
    outcomes: dict[str, object] = {}
    tampered = bytearray(data)
    tampered[-1] ^= 0x01  # the last byte belongs to the ciphertext
    attempts = (
        ("carol", _("Carol opens Bob's message 1"), carol.identity, bytes(data)),
        ("tampered", _("Bob opens message 1 with one byte flipped"), bob.identity, bytes(tampered)),
    )
    for key, label, identity, attempt in attempts:
        try:
            open_envelope(identity, attempt, wall_now=wall_now)
        except DecryptionFailed as exc:
            outcomes[key] = type(exc).__name__
            table.add_row(
                label,
                _("[green]{kind}[/] (expected): {error}").format(
                    kind=type(exc).__name__, error=escape(str(exc))
                ),
            )
        except MeshchatError as exc:
            outcomes[key] = type(exc).__name__
            table.add_row(
                label,
                _("[green]{kind}[/] (rejected): {error}").format(
                    kind=type(exc).__name__, error=escape(str(exc))
                ),
            )
        else:
            raise CommandError(_("demo: {label} succeeded; it must not").format(label=label))
    say(table)
    return outcomes


def _demo_timings(alice: DemoPerson, bob: DemoPerson, wall_now: float, say: Say) -> dict[str, float]:
    """Time seal and open on a short message, the common case."""
    body = DEMO_MESSAGES[0][1].encode()
    start = time.perf_counter()
    sealed = [
        seal(alice.identity, bob.identity.public, body, wall_now=wall_now) for _ in range(DEMO_TIMING_ROUNDS)
    ]
    sealed_at = time.perf_counter()
    for data in sealed:
        open_envelope(bob.identity, data, wall_now=wall_now)
    opened_at = time.perf_counter()
    timings = {
        "seal": (sealed_at - start) * 1000 / DEMO_TIMING_ROUNDS,
        "open": (opened_at - sealed_at) * 1000 / DEMO_TIMING_ROUNDS,
    }
    say(
        _(
            "\n[bold]6. timings[/] over {rounds} messages: seal {seal:.3f} ms, open (decrypt + verify) "
            "{open:.3f} ms per message"
        ).format(rounds=DEMO_TIMING_ROUNDS, seal=timings["seal"], open=timings["open"])
    )
    return timings
