"""What kind of address each of a node's own addresses is: public, private or relayed.

What it is: the classification ``Node.addresses()`` reports and invites are made from, as pure
functions over strings (multiaddrs in their text form). ``public`` means an AutoNAT server on another
machine dialled us back there (``meshchat.reach.core`` keeps those confirmations); ``relayed`` is a
``…/p2p-circuit/p2p/<us>`` address through a relay that holds a reservation for us; ``private`` is
everything else: a LAN or loopback address, or one nobody confirmed reachable from outside. A loopback
address is never public: a dial-back over loopback proves only that the server runs on this machine.

What it is not: I/O or parsing beyond what the kinds need (``meshchat.net`` parses multiaddrs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "AddressKind",
    "AddressesChanged",
    "NodeAddress",
    "classify",
    "invite_addresses",
    "is_loopback",
    "is_relayed",
    "transport_part",
]

#: The kinds of address a node reports (see the module docstring).
AddressKind: TypeAlias = Literal["public", "private", "relayed"]


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """One address of ours and what kind it is."""

    #: The multiaddr, ending in ``/p2p/<our PeerId>``.
    address: str
    #: ``public`` (confirmed by AutoNAT), ``private`` (LAN, loopback, unconfirmed) or ``relayed``.
    kind: AddressKind


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressesChanged:
    """A node event: our addresses or their kinds changed (public first, then relayed, then private)."""

    #: The addresses now.
    addresses: tuple[NodeAddress, ...]


def is_relayed(address: str) -> bool:
    """Whether ``address`` goes through a circuit relay."""
    return "/p2p-circuit" in address


def transport_part(address: str) -> str:
    """``address`` without a trailing ``/p2p/<PeerId>`` (and without the ``/p2p-circuit`` part's own
    ``/p2p/…`` for relayed ones, which keep everything up to the circuit)."""
    parts = address.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-2] == "p2p":
        parts = parts[:-2]
    return "/".join(parts)


def is_loopback(address: str) -> bool:
    """Whether ``address`` is on the loopback interface (``/ip4/127.…``, ``/ip6/::1``)."""
    parts = address.split("/")
    if len(parts) < 3 or parts[1] not in {"ip4", "ip6"}:
        return False
    try:
        return ipaddress.ip_address(parts[2]).is_loopback
    except ValueError:
        return False


def classify(
    direct: Iterable[str], relayed: Iterable[str], confirmed: Iterable[str]
) -> tuple[NodeAddress, ...]:
    """Our addresses with their kinds: ``direct`` ones (listen and observed addresses) are public if
    their transport part is among ``confirmed`` (AutoNAT dial-backs that worked) and not loopback,
    else private; ``relayed`` ones are relayed. Public first, then relayed, then private; no
    duplicates; each group in the order given."""
    good = {transport_part(a) for a in confirmed}
    public: list[NodeAddress] = []
    private: list[NodeAddress] = []
    seen: set[str] = set()
    for address in direct:
        if address in seen or is_relayed(address):
            continue
        seen.add(address)
        if transport_part(address) in good and not is_loopback(address):
            public.append(NodeAddress(address, "public"))
        else:
            private.append(NodeAddress(address, "private"))
    circuits = [NodeAddress(a, "relayed") for a in dict.fromkeys(relayed) if a not in seen]
    return (*public, *circuits, *private)


def invite_addresses(addresses: Sequence[NodeAddress]) -> list[str]:
    """The addresses to put in an invite: the public and relayed ones; if there are none, the private
    ones (peers on the same network, or the same machine, can still use those)."""
    outside = [a.address for a in addresses if a.kind != "private"]
    return outside or [a.address for a in addresses]
