"""The cover-traffic core's I/O half: publish its dummies on gossip at its deadlines.

What it is: the whole driver of ``meshchat.store.cover.CoverTraffic`` on a real node (STYLE §1): sleep
until the core's next deadline (trio's clock), ask it what is due, publish that through the gossip
driver as a chat's envelope is published. What it is not: it decides nothing (the core chooses the
times, the topics and the bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from meshchat.net.driver import GossipDriver
from meshchat.store.cover import CoverTraffic

__all__ = ["run_cover"]


async def run_cover(
    core: CoverTraffic,
    gossip: GossipDriver,
    *,
    wall_clock: Callable[[], float],
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish ``core``'s dummies on ``gossip`` until cancelled (the node closing)."""
    task_status.started()
    while True:
        await trio.sleep_until(core.next_deadline())  # the core's deadline, not a wait for a condition
        for action in core.on_timer(now=trio.current_time(), wall_now=wall_clock()):
            await gossip.publish(action.topic, action.envelope)
