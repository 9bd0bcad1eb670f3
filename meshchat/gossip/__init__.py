"""The sans-IO gossipsub router (v1.0/v1.1/v1.2): mesh, gossip, scoring. No I/O, no clock."""

from __future__ import annotations

from meshchat.gossip.config import GossipConfig, ScoreParams, ScoreThresholds, TopicScoreParams
from meshchat.gossip.events import (
    Deliver,
    Dial,
    Disconnect,
    DropReason,
    Join,
    Leave,
    PeerConnected,
    PeerDisconnected,
    Protocol,
    Publish,
    RouterAction,
    RouterInput,
    RpcReceived,
    SendFailed,
    SendRpc,
)
from meshchat.gossip.router import GossipRouter, RouterStatistics, ValidationResult, Validator

__all__ = [
    "Deliver",
    "Dial",
    "Disconnect",
    "DropReason",
    "GossipConfig",
    "GossipRouter",
    "Join",
    "Leave",
    "PeerConnected",
    "PeerDisconnected",
    "Protocol",
    "Publish",
    "RouterAction",
    "RouterInput",
    "RouterStatistics",
    "RpcReceived",
    "ScoreParams",
    "ScoreThresholds",
    "SendFailed",
    "SendRpc",
    "TopicScoreParams",
    "ValidationResult",
    "Validator",
]
