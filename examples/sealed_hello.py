"""Two people, one sealed message: the smallest complete use of meshchat's identity and crypto layers.

Run: python examples/sealed_hello.py

Alice and Bob each create an identity, swap invites, check their safety numbers match, and Alice sends
Bob a sealed message. What a relay would see is printed too: no sender, no text, a padded size.
"""

from __future__ import annotations

import time

from meshchat import Identity, Invite, decode_envelope, message_id, open_envelope, safety_number, seal


def main() -> None:
    """Run the exchange and print what each party sees."""
    alice, bob = Identity.generate(), Identity.generate()

    # Invites travel out of band (a QR code, a link); from_text verifies the signature inside.
    bob_card = Invite.from_text(Invite.create(bob, name="Bob").to_text())
    alice_card = Invite.from_text(Invite.create(alice, name="Alice").to_text())
    assert safety_number(alice.public, bob_card.public) == safety_number(bob.public, alice_card.public)
    print("safety number:", safety_number(alice.public, bob_card.public))

    envelope = seal(alice, bob_card.public, "Сәлам, Bob! 👋".encode(), wall_now=time.time())
    seen_by_relay = decode_envelope(envelope)
    print(f"relay sees: {len(envelope)} bytes, inbox tag {seen_by_relay.inbox_tag.hex()}, no sender")
    print("message id:", message_id(envelope).hex())

    message = open_envelope(bob, envelope, wall_now=time.time())
    sender = "Alice" if message.sender == alice_card.public else "someone else"
    print(f"Bob reads from {sender}: {message.body.decode()}")


if __name__ == "__main__":
    main()
