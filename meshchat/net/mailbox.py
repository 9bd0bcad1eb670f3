"""The mailbox protocol on libp2p streams: ``/meshchat/mailbox/1.0.0``, request and response.

A client opens a stream, writes one length-prefixed request and reads one length-prefixed response,
then closes the stream (one stream per call keeps calls independent: a slow fetch never holds up a
store). A mailbox serves each stream with ``MailboxCore.handle``; the PeerId it hands the core is the
one the Noise handshake authenticated, which is what lets the core check inbox-tag ownership.

Framing reuses the pubsub codec's unsigned-varint prefix (``meshchat.gossip.rpc.frame``); message
formats are ``meshchat.store.protocol``'s. Bad frames and undecodable requests get a ``MailboxError``
back (or a reset when the frame itself is broken), counted in ``MailboxServer.refused``.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshchat.errors import DecodeError, NetworkError, TooLarge
from meshchat.gossip.rpc import FrameDecoder, frame
from meshchat.store.mailbox import MailboxCore
from meshchat.store.protocol import (
    MAILBOX_PROTOCOL,
    MAX_FRAME,
    ErrorCode,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

__all__ = ["CALL_TIMEOUT", "MailboxServer", "call_mailbox", "supports_mailbox"]

#: Seconds one call (open, request, response) may take: a full frame at a slow link's pace.
CALL_TIMEOUT = 30.0
#: Seconds to find out whether a peer speaks the mailbox protocol.
PROBE_TIMEOUT = 10.0
_READ_CHUNK = 64 * 1024
_PROTOCOL = TProtocol(MAILBOX_PROTOCOL)


async def _read_frame(stream: INetStream) -> bytes:
    """One length-prefixed frame; ``DecodeError``/``TooLarge`` if broken, ``EOFError`` if it ends early."""
    decoder = FrameDecoder(max_frame_size=MAX_FRAME)
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            raise EOFError("stream ended before a whole frame")
        frames = decoder.feed(chunk)
        if frames:
            if len(frames) > 1 or decoder.pending:
                raise DecodeError("mailbox frame", "more than one message on a call stream")
            return frames[0]


class MailboxServer:
    """Serves ``core`` on ``host``'s ``/meshchat/mailbox/1.0.0`` streams."""

    def __init__(self, host: IHost, core: MailboxCore) -> None:
        """Register the stream handler."""
        self.core = core
        #: Streams refused before reaching the core, by reason.
        self.refused: Counter[str] = Counter()
        #: Streams closed before a request (peers checking that we are a mailbox).
        self.probes = 0
        host.set_stream_handler(_PROTOCOL, self._serve)

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        try:
            with trio.move_on_after(CALL_TIMEOUT):
                try:
                    raw = await _read_frame(stream)
                except EOFError:
                    self.probes += 1
                    return
                try:
                    request = decode_request(raw)
                except DecodeError as exc:  # TooLarge is one
                    self.refused["bad request"] += 1
                    answer: MailboxResponse = MailboxError(code=ErrorCode.BAD_REQUEST, detail=str(exc))
                else:
                    answer = self.core.handle(peer, request, wall_now=time.time())
                await stream.write(frame(encode_response(answer)))
        except Exception:  # the peer went away mid-call, or sent a broken frame: nothing to answer
            self.refused["broken stream"] += 1
        finally:
            with contextlib.suppress(Exception):  # already reset
                await stream.close()


async def call_mailbox(host: IHost, peer: str, request: MailboxRequest) -> MailboxResponse:
    """Send ``request`` to mailbox ``peer`` (connected) and return its answer.

    Raises ``NetworkError`` if the call cannot be made or times out, ``DecodeError`` (or ``TooLarge``)
    if the answer is garbage.
    """
    data = frame(encode_request(request))
    stream: INetStream | None = None
    try:
        with trio.fail_after(CALL_TIMEOUT):
            stream = await host.new_stream(ID.from_base58(peer), [_PROTOCOL])
            await stream.write(data)
            raw = await _read_frame(stream)
    except (DecodeError, TooLarge):
        raise
    except Exception as exc:  # timeouts, resets, refusals: py-libp2p raises many types for one meaning
        raise NetworkError(f"mailbox call to {peer}", str(exc) or type(exc).__name__) from exc
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):  # already reset
                await stream.close()
    return decode_response(raw)


async def supports_mailbox(host: IHost, peer: str) -> bool:
    """Whether ``peer`` (connected) serves the mailbox protocol: a stream to it negotiates."""
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            stream = await host.new_stream(ID.from_base58(peer), [_PROTOCOL])
    except Exception:  # not supported, or the peer left: either way not a mailbox for us now
        return False
    with contextlib.suppress(Exception):  # already gone
        await stream.reset()
    return True
