"""Several devices per person in store-and-forward (``Messenger`` + ``DeviceBook``): a new device is
linked by the primary, a message to a person reaches every device, a device's own sent messages reach
its other devices, a removed device gets nothing sent afterwards, and a contact's device list
changing mid-conversation is followed."""

from __future__ import annotations

import random

import pytest

from meshchat.errors import NotPrimary
from meshchat.identity import Identity
from meshchat.identity.devices import LinkRequest
from meshchat.store.messenger import (
    DeviceListChanged,
    Linked,
    MessageReceived,
    Messenger,
    PublishEnvelope,
)
from meshchat.store.storage import MemoryStorage
from meshchat.wire import decode_envelope

NOW = 1_800_000_000.0


class Net:
    """Messengers that hand each other every published envelope (by inbox tag)."""

    def __init__(self) -> None:
        self.users: dict[str, Messenger] = {}
        self.got: dict[str, list[MessageReceived]] = {}
        self.changes: dict[str, list[object]] = {}

    def add(self, name: str, identity: Identity | None = None) -> Messenger:
        identity = identity or Identity.generate()
        messenger = Messenger(identity, MemoryStorage(), rng=random.Random(len(self.users)), wall_now=NOW)
        self.users[name] = messenger
        self.got[name], self.changes[name] = [], []
        return messenger

    def deliver(self, actions: list[object], rounds: int = 6) -> None:
        """Deliver every published envelope to whoever's tag it carries, and what that causes."""
        for _ in range(rounds):
            envelopes = [a.envelope for a in actions if isinstance(a, PublishEnvelope)]
            if not envelopes:
                return
            actions = []
            for name, messenger in self.users.items():
                out = messenger.receive(envelopes, wall_now=NOW)
                self.got[name] += [a for a in out if isinstance(a, MessageReceived)]
                self.changes[name] += [a for a in out if isinstance(a, DeviceListChanged | Linked)]
                actions += out
        raise AssertionError("still delivering after the rounds allowed")

    def bodies(self, name: str) -> list[bytes]:
        return [m.message.body for m in self.got[name]]


@pytest.fixture
def net() -> Net:
    return Net()


def _link(net: Net, primary: str, new: str, name: str = "laptop") -> None:
    request = net.users[new].link_request(name=name, addrs=["/ip4/127.0.0.1/tcp/1"], wall_now=NOW)
    shown = LinkRequest.from_text(request.to_text(), wall_now=NOW)
    assert shown.code() == request.code()  # both screens show the same comparison code
    _, actions = net.users[primary].approve_link(shown, snapshot=b"profile", wall_now=NOW)
    net.deliver(actions)


def test_link_then_every_device_gets_messages_and_copies(net: Net) -> None:
    alice = net.add("alice")
    laptop = net.add("laptop")
    bob = net.add("bob")
    _link(net, "alice", "laptop")
    [linked] = [c for c in net.changes["laptop"] if isinstance(c, Linked)]
    assert linked.root == alice.identity.public and linked.snapshot == b"profile"
    assert laptop.devices.root == alice.identity.public.ed25519 and not laptop.devices.is_primary
    assert laptop.devices.own_list is not None
    assert laptop.devices.own_list.keys() == {alice.identity.public.ed25519, laptop.identity.public.ed25519}
    # Bob learns Alice's list; a message to Alice reaches both of her devices.
    net.deliver(alice.send_device_list(bob.identity.public, wall_now=NOW))
    [change] = net.changes["bob"]
    assert isinstance(change, DeviceListChanged) and [d.name for d in change.added] == ["primary", "laptop"]
    record, actions = bob.send(alice.identity.public, b"hi both", wall_now=NOW)
    assert len(bob.siblings(record.message_id)) == 2
    net.deliver(actions)
    assert net.bodies("alice") == [b"hi both"] and net.bodies("laptop") == [b"hi both"]
    [at_laptop] = net.got["laptop"]
    assert at_laptop.message.sender == bob.identity.public.ed25519 and at_laptop.message.device == b""
    # The laptop writes to Bob: Bob sees Alice (her device named), Alice's phone sees it as sent.
    net.deliver(laptop.send(bob.identity.public, b"from the laptop", wall_now=NOW)[1])
    from_laptop = net.got["bob"][-1].message
    assert from_laptop.body == b"from the laptop"
    assert from_laptop.sender == alice.identity.public.ed25519
    assert from_laptop.device == laptop.identity.public.ed25519
    copy = net.got["alice"][-1].message
    assert copy.body == b"from the laptop" and copy.to == bob.identity.public.ed25519
    assert copy.sender == alice.identity.public.ed25519
    # Bob's reply reaches both, and each of Bob's receipts moves the record of its own device.
    net.deliver(bob.send(alice.identity.public, b"reply", wall_now=NOW)[1])
    assert net.bodies("laptop")[-1] == b"reply" and net.bodies("alice")[-1] == b"reply"


def test_a_removed_device_reads_nothing_sent_afterwards(net: Net) -> None:
    alice, laptop, bob = net.add("alice"), net.add("laptop"), net.add("bob")
    _link(net, "alice", "laptop")
    net.deliver(alice.send_device_list(bob.identity.public, wall_now=NOW))
    net.deliver(bob.send(alice.identity.public, b"before", wall_now=NOW)[1])
    assert net.bodies("laptop") == [b"before"]
    with pytest.raises(NotPrimary):
        laptop.remove_device(laptop.identity.public.ed25519, wall_now=NOW)
    new, actions = alice.remove_device(laptop.identity.public.ed25519, wall_now=NOW)
    assert laptop.identity.public.ed25519 not in {d.key for d in new.devices}
    net.deliver(actions)
    net.deliver(alice.send_device_list(bob.identity.public, wall_now=NOW))
    removed = [c for c in net.changes["bob"] if isinstance(c, DeviceListChanged) and c.removed]
    assert [d.key for d in removed[0].removed] == [laptop.identity.public.ed25519]
    record, actions = bob.send(alice.identity.public, b"after", wall_now=NOW)
    assert [decode_envelope(r.envelope).inbox_tag for r in bob.siblings(record.message_id)] == [
        decode_envelope(record.envelope).inbox_tag
    ]
    net.deliver(actions)
    net.deliver(alice.send(bob.identity.public, b"alice after", wall_now=NOW)[1])
    assert net.bodies("laptop") == [b"before"]  # nothing new: not to it, and no copies from Alice
    assert net.bodies("alice")[-1] == b"after"


def test_a_grant_nobody_asked_for_is_refused(net: Net) -> None:
    mallory, victim = net.add("mallory"), net.add("victim")
    request = LinkRequest.create(
        victim.identity, name="x", addrs=[], wall_now=NOW, random_bytes=random.randbytes
    )
    # Mallory "grants" the victim into her person although the victim never asked (no pending request).
    _, actions = mallory.approve_link(request, snapshot=b"", wall_now=NOW)
    net.deliver(actions)
    assert not net.changes["victim"] and victim.devices.is_primary
    assert victim.statistics().rejected  # counted, typed


def test_a_list_naming_someone_elses_key_does_not_make_it_yours(net: Net) -> None:
    """Mallory signs a list naming Bob's key as her device: Carol still sees Bob's messages as Bob's
    (a key is a person's device only once that device itself brought the list)."""
    from meshchat.identity.devices import Device, DeviceList  # noqa: PLC0415

    mallory, bob, carol = net.add("mallory"), net.add("bob"), net.add("carol")
    claim = DeviceList.first(mallory.identity, name="phone", wall_now=NOW).with_device(
        mallory.identity, Device(key=bob.identity.public.ed25519, name="bob", added=int(NOW))
    )
    mallory.devices.adopt_own(claim)
    mallory.devices.committed()
    net.deliver(mallory.send_device_list(carol.identity.public, wall_now=NOW))
    assert carol.devices.list_of(mallory.identity.public.ed25519) == claim  # learnt: it is her list
    net.deliver(bob.send(carol.identity.public, b"it is me, Bob", wall_now=NOW)[1])
    assert net.got["carol"][-1].message.sender == bob.identity.public.ed25519
    assert net.got["carol"][-1].message.device == b""


def test_a_removed_device_is_nobodys_device_at_once(net: Net) -> None:
    alice, laptop, bob = net.add("alice"), net.add("laptop"), net.add("bob")
    _link(net, "alice", "laptop")
    net.deliver(laptop.send(bob.identity.public, b"from the laptop", wall_now=NOW)[1])
    assert net.got["bob"][-1].message.sender == alice.identity.public.ed25519
    _, actions = alice.remove_device(laptop.identity.public.ed25519, wall_now=NOW)
    net.deliver(actions)
    net.deliver(alice.send_device_list(bob.identity.public, wall_now=NOW))
    # The lost laptop writes again: Bob no longer shows it as Alice.
    net.deliver(laptop.send(bob.identity.public, b"still Alice?", wall_now=NOW)[1])
    last = net.got["bob"][-1].message
    assert last.body == b"still Alice?" and last.sender == laptop.identity.public.ed25519
