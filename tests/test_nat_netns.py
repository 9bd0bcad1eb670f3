"""Two people, each behind their own NAT gateway, chat through a circuit relay on the "public" switch,
then hole-punch to a direct connection (DCUtR: ``meshchat.net.punch``); behind NATs that map every
connection to a random port the punch fails within ``PUNCH_TIMEOUT`` and the relay keeps delivering.

Real ``meshchat`` processes in network namespaces the test makes (``tests/nat_harness.py``); needs
root, iproute2 and nftables (skipped off CI without them, failed under ``CI=true``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nat_harness import nat_chat, of, texts
from processes import stop_processes

from meshchat.net.punch import PUNCH_TIMEOUT

#: Seconds any one wait may take (generous: two cores shared with other tests).
WAIT = 60.0

pytestmark = pytest.mark.slow


async def test_behind_two_port_preserving_nats_the_chat_goes_through_the_relay_then_direct(
    tmp_path: Path,
) -> None:
    async with nat_chat(tmp_path, tag="p") as chat:
        await chat.say("через реле")
        await chat.bob_has(1, timeout=WAIT)
        # Both ends report the direct connection, each at the other's gateway (its NAT mapping).
        await chat.bob.wait_for(lambda: bool(of(chat.bob, "direct_connection")), timeout=WAIT)
        await chat.alice.wait_for(lambda: bool(of(chat.alice, "direct_connection")), timeout=WAIT)
        assert of(chat.bob, "direct_connection")[0]["address"].startswith("/ip4/203.0.113.2/tcp/")
        assert of(chat.alice, "direct_connection")[0]["address"].startswith("/ip4/203.0.113.3/tcp/")
        assert of(chat.bob, "punch_failed") == []
        # The relay goes away: what Alice types now can only travel on the punched connection.
        await stop_processes([chat.relay.process])
        await chat.say("напрямую 1", "напрямую 2")
        await chat.bob_has(3, timeout=WAIT)
        assert texts(chat.bob) == ["через реле", "напрямую 1", "напрямую 2"]


async def test_behind_two_random_port_nats_the_punch_fails_in_bounded_time_and_the_relay_delivers(
    tmp_path: Path,
) -> None:
    async with nat_chat(tmp_path, fully_random=True, tag="r") as chat:
        await chat.say("раз")
        await chat.bob_has(1, timeout=WAIT)
        await chat.bob.wait_for(lambda: bool(of(chat.bob, "punch_failed")), timeout=PUNCH_TIMEOUT + WAIT)
        failed = of(chat.bob, "punch_failed")[0]
        assert failed["after_s"] <= PUNCH_TIMEOUT + 5  # the punch's own bound (plus a loaded machine)
        assert of(chat.bob, "direct_connection") == of(chat.alice, "direct_connection") == []
        await chat.say("два", "три")  # still through the relay
        await chat.bob_has(3, timeout=WAIT)
        assert texts(chat.bob) == ["раз", "два", "три"]
