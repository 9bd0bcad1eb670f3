"""meshchat and a js-libp2p node (``@chainsafe/libp2p-gossipsub``, pinned in ``tests/interop``) form a
mesh over TCP + Noise + yamux and relay each other's messages both ways, on a StrictNoSign topic
(content-addressed ids, as meshchat's own topics) and on a StrictSign topic (meshchat signs what it
publishes and checks the js node's signatures).

The js packages are installed with ``npm ci`` from the committed lock file into a temporary folder.
Skipped, with the reason, only where ``node`` or ``npm`` is not installed; an ``npm ci`` that fails
(no registry) fails the test.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from processes import JsonLinesProcess

from meshchat.gossip import DropReason
from meshchat.identity import Identity
from meshchat.net import MessageDelivered
from meshchat.node import Node

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="node and npm are not installed: the js-libp2p interop peer cannot run here",
    ),
]

PEER_DIR = Path(__file__).parent / "interop"
TOPIC = "interop"
#: Seconds any one wait may take (npm ci takes ~10 s; everything else well under a second).
WAIT = 30.0
NPM_TIMEOUT = 300


@pytest.fixture(scope="module")
def js_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the js peer and its pinned packages installed."""
    folder = tmp_path_factory.mktemp("js-peer")
    for name in ("package.json", "package-lock.json", "peer.mjs"):
        shutil.copy(PEER_DIR / name, folder / name)
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stderr[-2000:]}"
    return folder / "peer.mjs"


class JsPeer(JsonLinesProcess):
    """The running js node: its JSON events, and its stdin to publish with."""

    def received(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "message"]


@pytest.mark.parametrize("policy", ["StrictNoSign", "StrictSign"])
async def test_meshchat_and_js_libp2p_relay_each_others_messages(js_peer: Path, policy: str) -> None:
    signed = [TOPIC] if policy == "StrictSign" else []
    identity = Identity(bytes([77]) * 32)
    async with Node.open(identity=identity, listen=["/ip4/127.0.0.1/tcp/0"], signed_topics=signed) as node:
        await node.subscribe(TOPIC)
        process = await trio.lowlevel.open_process(
            ["node", str(js_peer), policy, TOPIC, node.listen_addrs[0]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        js = JsPeer(process)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(js.read_events)
                await js.wait_for(lambda: any(e["event"] == "subscribed" for e in js.events))
                js_id = next(e["peer_id"] for e in js.events if e["event"] == "listening")
                with trio.fail_after(WAIT):
                    await node.wait_for(lambda: js_id in node.driver.router.topic_peers(TOPIC))

                # meshchat -> js
                await node.publish(TOPIC, "от meshchat 🔐".encode())
                await js.wait_for(lambda: bool(js.received()))
                (got,) = js.received()
                assert base64.b64decode(got["data"]).decode() == "от meshchat 🔐"
                assert got["from"] == (node.peer_id if signed else None)  # js checked the signature

                # js -> meshchat
                assert process.stdin is not None
                await process.stdin.send_all("from js ✓\n".encode())
                with trio.fail_after(WAIT):
                    async for event in node.events():
                        if isinstance(event, MessageDelivered):
                            break
                assert event.data.decode() == "from js ✓"
                assert event.source == js_id
                if signed:  # the spec's id for StrictSign: the author's PeerId bytes + its seqno
                    assert event.message_id.startswith(bytes.fromhex("0024080112"))
                drops = node.statistics().router.drops
                assert drops[DropReason.BAD_SIGNATURE] == 0
                assert drops[DropReason.INVALID] == 0
                nursery.cancel_scope.cancel()
        finally:
            process.kill()
            with trio.move_on_after(WAIT) as scope:
                scope.shield = True
                await process.wait()
