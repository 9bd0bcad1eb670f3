"""The public trio API: a meshchat peer on the real network.

```python
async with meshchat.Node.open(profile_dir, listen=["/ip4/0.0.0.0/tcp/0"], bootstrap=[...]) as node:
    await node.subscribe("lobby")
    await node.publish("lobby", b"hello")
    async for event in node.events():          # MessageDelivered, PeerJoined, PeerLeft
        ...
```

``Node`` ties the user's identity (the key file in the profile folder), a py-libp2p host whose key is
that identity, and the gossip router with its driver together, and closes all of it on exit. Plain
gossip topics carry whatever bytes the application publishes; sealed direct messages to a contact's
inbox and the store-and-forward outbox come with the issues that follow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

from meshchat.errors import BadAddress, NetworkError
from meshchat.gossip import GossipConfig, GossipRouter, ScoreParams, Validator
from meshchat.gossip.messages import Topic
from meshchat.gossip.signing import MessageSigner
from meshchat.identity import KEY_FILE_NAME, Identity, load_identity
from meshchat.net import DriverStatistics, GossipDriver, NetEvent, build_host, parse_multiaddr

__all__ = ["DEFAULT_LISTEN", "KEY_FILE", "Node"]

#: The identity's key file inside a profile folder.
KEY_FILE = KEY_FILE_NAME
#: Where a node listens unless told otherwise: every interface, a port the system picks.
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/0",)
#: Seconds to wait for one bootstrap peer.
BOOTSTRAP_TIMEOUT = 10.0
#: Seconds closing a node's connections may take.
CLOSE_TIMEOUT = 5.0


class Node:
    """One meshchat peer: identity, libp2p host, gossip router. Make one with ``Node.open``."""

    def __init__(self, identity: Identity, host: IHost, driver: GossipDriver) -> None:
        """Use ``Node.open``; this only stores its parts."""
        self.identity = identity
        self._host = host
        self._driver = driver

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        profile_dir: str | Path | None = None,
        *,
        identity: Identity | None = None,
        passphrase: str | None = None,
        listen: Sequence[str] = DEFAULT_LISTEN,
        bootstrap: Sequence[str] = (),
        mdns: bool = False,
        config: GossipConfig | None = None,
        score_params: ScoreParams | None = None,
        validator: Validator | None = None,
        signed_topics: Sequence[str] = (),
    ) -> AsyncIterator[Node]:
        """Start a node for the identity in ``profile_dir`` (or ``identity``); stop it on exit.

        ``listen`` and ``bootstrap`` are multiaddrs; bootstrap peers need their ``/p2p/<PeerId>``.
        ``validator`` judges every new message before it is delivered or forwarded (default: accept).
        ``signed_topics`` run StrictSign (messages signed by their author, for topics shared with other
        libp2p applications); meshchat's own topics and all others are StrictNoSign.
        Raises ``KeyFileError`` for a missing or locked identity, ``BadAddress`` for an unusable
        address and ``NetworkError`` if no bootstrap peer could be reached.
        """
        if identity is None:
            if profile_dir is None:
                raise ValueError("give a profile folder or an identity")
            identity = load_identity(Path(profile_dir) / KEY_FILE, passphrase)
        listen_addrs = [parse_multiaddr(a) for a in listen]
        bootstrap_infos = [_peer_info(a) for a in bootstrap]
        host = build_host(identity, mdns=mdns)
        config = config or GossipConfig()
        if signed_topics:
            config = dataclasses.replace(
                config, signed_topics=config.signed_topics | frozenset(signed_topics)
            )
        router = GossipRouter(
            config,
            local_peer=identity.public.peer_id,
            rng=random.Random(),
            validator=validator,
            signer=MessageSigner(identity, first_seqno=time.time_ns()),
            score_params=score_params if score_params is not None else ScoreParams(),
        )
        driver = GossipDriver(host, router)
        node = cls(identity, host, driver)
        try:
            async with host.run(listen_addrs), trio.open_nursery() as nursery:
                await nursery.start(driver.run)
                if bootstrap_infos:
                    await node._bootstrap(bootstrap_infos)
                try:
                    yield node
                finally:
                    await node._hang_up()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio wraps whatever ends a nursery (an error of ours, or of the caller's ``async with``
            # body) in exception groups; one error is raised as itself, as callers expect.
            single = _only_exception(group)
            if single is None:
                raise
            if isinstance(single, OSError):
                raise NetworkError("listen", single.strerror or str(single)) from single
            raise single from None
        except OSError as exc:
            raise NetworkError("listen", exc.strerror or str(exc)) from exc

    async def _hang_up(self) -> None:
        """Close every connection before the host stops (py-libp2p 0.8.1 leaks dialled sockets else)."""
        network = self._host.get_network()
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            for peer_id in list(network.connections):
                with contextlib.suppress(Exception):
                    await self._host.disconnect(peer_id)

    async def _bootstrap(self, infos: list[PeerInfo]) -> None:
        reached = 0
        errors: list[str] = []
        for info in infos:
            try:
                await self._dial(info)
                reached += 1
            except Exception as exc:  # refused, unreachable, wrong key: try the next
                errors.append(f"{exc or type(exc).__name__}")
        if not reached:
            raise NetworkError("bootstrap", "no bootstrap peer reached: " + "; ".join(errors))

    # --- who we are ---------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's PeerId: the one in the user's invite."""
        return self.identity.public.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        """Addresses peers can dial, each ending in ``/p2p/<PeerId>``."""
        return [str(a) for a in self._host.get_addrs()]

    @property
    def host(self) -> IHost:
        """The py-libp2p host (for discovery and diagnostics)."""
        return self._host

    @property
    def driver(self) -> GossipDriver:
        """The gossip driver (its router, mesh and counters)."""
        return self._driver

    # --- gossip -------------------------------------------------------------------------------------

    async def connect(self, address: str) -> None:
        """Dial a peer at ``address`` (a multiaddr ending in ``/p2p/<PeerId>``)."""
        info = _peer_info(address)
        try:
            await self._dial(info)
        except Exception as exc:  # py-libp2p raises many types for one meaning
            raise NetworkError(f"dial {address}", str(exc) or type(exc).__name__) from exc

    async def _dial(self, info: PeerInfo) -> None:
        with trio.fail_after(BOOTSTRAP_TIMEOUT):
            await self._host.connect(info)
        # py-libp2p's connect can return without a connection (it logs the failure): check.
        if not self._host.get_network().connections.get(info.peer_id):
            raise NetworkError(f"dial {info.peer_id}", "no connection could be made")

    async def subscribe(self, topic: Topic) -> None:
        """Join gossip ``topic``: its messages arrive as ``MessageDelivered`` events."""
        await self._driver.join(topic)

    async def unsubscribe(self, topic: Topic) -> None:
        """Leave gossip ``topic``."""
        await self._driver.leave(topic)

    async def publish(self, topic: Topic, data: bytes) -> None:
        """Publish ``data`` on gossip ``topic`` (joined or not)."""
        await self._driver.publish(topic, data)

    def events(self) -> trio.MemoryReceiveChannel[NetEvent]:
        """Messages and peer changes, in order (``async for event in node.events()``).

        A channel, not a generator: breaking out of the loop leaves nothing to clean up, and the next
        loop goes on where this one stopped. Events the application does not take are queued up to
        ``meshchat.net.driver.EVENT_QUEUE``; beyond that they are counted as dropped.
        """
        return self._driver.events

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, re-checked whenever the node's state changes."""
        await self._driver.wait_for(condition)

    def statistics(self) -> DriverStatistics:
        """Counters of the network driver and the router, drops by reason."""
        return self._driver.statistics()


def _only_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` and any groups nested in it, or None if there are several."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


def _peer_info(address: str) -> PeerInfo:
    parsed = parse_multiaddr(address)
    try:
        return info_from_p2p_addr(parsed)
    except Exception as exc:  # no /p2p part, or a bad PeerId
        raise BadAddress(address, "a peer address must end in /p2p/<PeerId>") from exc
