"""Circuit relay v2 on a host: py-libp2p's protocol, transport and relay discovery, started together.

``Node`` uses one per host: every node can reserve a slot on a relay and dial ``/p2p-circuit``
addresses; a node opened with ``circuit_relay=True`` also relays for others (hop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from libp2p.abc import IHost
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.discovery import RelayDiscovery
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

__all__ = ["CircuitRelay"]


class CircuitRelay:
    """py-libp2p's circuit relay v2 on one host: the protocol (hop if asked), the transport to dial
    ``/p2p-circuit`` addresses, and relay discovery to make reservations."""

    def __init__(self, protocol: CircuitV2Protocol, transport: CircuitV2Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.discovery = transport.discovery

    @classmethod
    @asynccontextmanager
    async def running(cls, host: IHost, *, hop: bool) -> AsyncIterator[CircuitRelay]:
        protocol = CircuitV2Protocol(host, allow_hop=hop)
        roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if hop else RelayRole(0))
        async with background_trio_service(protocol):
            transport = CircuitV2Transport(host, protocol, RelayConfig(roles=roles))
            transport.discovery = RelayDiscovery(host, auto_reserve=False)
            async with background_trio_service(transport.discovery):
                yield cls(protocol, transport)
