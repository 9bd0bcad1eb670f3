"""How a node starts a forward-secret session with someone it has no session with, and keeps its own
prekey bundle findable.

A first message to a contact takes a one-time prekey from the contact's mailboxes (at most
``PREKEY_TAKE_TIMEOUT``, 3 s), else uses the bundle in the contact's invite, else, for someone who is
not a contact, looks the bundle up in the DHT (at most ``BUNDLE_LOOKUP_TIMEOUT``, 3 s), else the
session starts from the identity key alone (``meshchat.sessions.x3dh``). A contact's invite also says
which mailboxes to store messages for it on. The node's own bundle is republished in the DHT every
``BUNDLE_REPUBLISH`` seconds. Split out of ``meshchat.node`` so the facade stays thin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT

from meshchat.contacts import Contact
from meshchat.errors import BadAddress, DecodeError
from meshchat.identity import PublicIdentity
from meshchat.net.bundles import BUNDLE_REPUBLISH, lookup_bundle, publish_bundle
from meshchat.net.dialer import Dialer, peer_info
from meshchat.net.mailbox import take_prekey
from meshchat.sessions.prekeys import PrekeyBundle
from meshchat.store.messenger import Messenger

__all__ = ["UNPUBLISHED_RETRY", "FirstContact"]

#: Seconds before publishing the bundle again while no DHT peer took it (none connected yet).
UNPUBLISHED_RETRY = 60.0


class FirstContact:
    """Prepares the messenger's sessions before a send, from invites, mailboxes and the DHT."""

    def __init__(
        self, host: IHost, dialer: Dialer, messenger: Messenger, *, wall_clock: Callable[[], float]
    ) -> None:
        """Use ``host`` and ``dialer`` to reach mailboxes and the DHT for ``messenger``'s sessions."""
        self._host = host
        self._dialer = dialer
        self._messenger = messenger
        self._wall_clock = wall_clock

    async def prepare(self, to: Contact | PublicIdentity) -> None:
        """Before sending to ``to``: give the messenger the best bundle to start a session from, if it
        has no session yet (a mailbox's one-time prekey, the invite's bundle, or the DHT's)."""
        recipient = to.public if isinstance(to, Contact) else to
        sessions = self._messenger.sessions
        if isinstance(to, Contact):
            self.use_invite(to)
            if to.mailboxes and not sessions.has_session(recipient.ed25519):
                # A one-time key from its mailboxes is preferred to the invite's bundle.
                bundle = await take_prekey(self._host, self._dialer, to.public, to.mailboxes)
                if bundle is not None and (bundle.one_time or not to.invite.bundle):
                    self._messenger.set_bundle(recipient, bundle)
        dht = self._dialer.dht
        if dht is not None and sessions.needs_bundle(recipient.ed25519, wall_now=self._wall_clock()):
            # Not a contact (no invite): its published bundle starts a forward-secret session.
            self._messenger.set_bundle(recipient, await lookup_bundle(dht, recipient))

    def use_invite(self, contact: Contact) -> None:
        """Use what ``contact``'s invite says: its mailboxes, and its prekey bundle for the session
        (also called after a send, so a one-time key is never used for a second set-up)."""
        peers = []
        for address in contact.mailboxes:
            with contextlib.suppress(BadAddress):  # an unusable one in an invite is skipped, not fatal
                peers.append(str(peer_info(address).peer_id))
        self._messenger.prefer_mailboxes(contact.public, peers)
        self._messenger.set_stamp_cost(contact.public, contact.invite.stamp_cost)  # what they ask of us
        bundle = None
        if contact.invite.bundle:
            with contextlib.suppress(DecodeError):  # a bad one: the session starts from the key alone
                bundle = PrekeyBundle.decode(contact.invite.bundle)
        self._messenger.set_bundle(contact.public, bundle)

    async def publish_bundle(self, dht: KadDHT, public: PublicIdentity) -> None:
        """Keep this device's prekey bundle in the DHT: every ``BUNDLE_REPUBLISH`` seconds (its signed
        prekey rotates weekly), every ``UNPUBLISHED_RETRY`` seconds while no peer takes it. Runs forever."""
        while True:
            bundle = self._messenger.bundle(wall_now=self._wall_clock())
            published = await publish_bundle(dht, public, bundle)
            await trio.sleep(BUNDLE_REPUBLISH if published else UNPUBLISHED_RETRY)
