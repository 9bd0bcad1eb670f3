"""Sans-IO reachability: AutoNAT verdicts, automatic circuit relays, the kinds of our addresses.

``meshchat.reach.core.ReachCore`` decides; ``meshchat.net.reach_driver`` runs it on a py-libp2p host.
"""

from __future__ import annotations

from meshchat.reach.addresses import (
    AddressesChanged,
    AddressKind,
    NodeAddress,
    classify,
    invite_addresses,
)
from meshchat.reach.core import (
    DialBack,
    DropReason,
    Reachability,
    ReachConfig,
    ReachCore,
    ReachStatistics,
)

__all__ = [
    "AddressKind",
    "AddressesChanged",
    "DialBack",
    "DropReason",
    "NodeAddress",
    "ReachConfig",
    "ReachCore",
    "ReachStatistics",
    "Reachability",
    "classify",
    "invite_addresses",
]
