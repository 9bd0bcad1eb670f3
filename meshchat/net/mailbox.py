"""The mailbox protocol on libp2p streams: ``/meshchat/mailbox/1.0.0``, request and response.

A client opens a stream, writes one length-prefixed request and reads one length-prefixed response,
then closes the stream (one stream per call keeps calls independent: a slow fetch never holds up a
store). A mailbox serves each stream with ``MailboxCore.handle``; the PeerId it hands the core is the
one the Noise handshake authenticated, which is what lets the core check inbox-tag ownership.

Framing reuses the pubsub codec's unsigned-varint prefix (``meshchat.gossip.rpc.frame``); message
formats are ``meshchat.store.protocol``'s. Bad frames and undecodable requests get a ``MailboxError``
back (or a reset when the frame itself is broken), counted in ``MailboxServer.refused``.

``take_prekey`` is a sender's side of ``prekey take``: before its first message to a contact it asks the
contact's mailboxes (from the invite) for a bundle with a one-time prekey, within
``PREKEY_TAKE_TIMEOUT`` for all of them, and checks what comes back (signatures, the right identity).

What a peer can make a mailbox hold is bounded: ``MAX_CALLS_PER_PEER`` calls at once per peer (more
are reset at once) and ``MAX_CALLS`` in all (past it, a new call ends the oldest), each call's request
frame within ``MAX_FRAME`` and charged to a ``BufferBudget`` (per peer and in total) while it arrives,
and each call, a slow reader's included, within ``CALL_TIMEOUT`` from start to answer. Every refusal
is counted by reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshchat.errors import BadAddress, BadBundle, DecodeError, NetworkError, QuotaExceeded
from meshchat.gossip.rpc import frame
from meshchat.identity import PublicIdentity
from meshchat.net.budget import BufferBudget, FrameReader
from meshchat.net.dialer import Dialer, peer_info
from meshchat.net.host import CLOSE_ERRORS, IO_ERRORS
from meshchat.sessions.prekeys import PrekeyBundle
from meshchat.store.mailbox import MailboxCore, MailboxStatistics
from meshchat.store.protocol import (
    MAILBOX_PROTOCOL,
    MAX_FRAME,
    ErrorCode,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    PrekeyGiven,
    PrekeyTake,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

__all__ = [
    "CALL_TIMEOUT",
    "MAX_CALLS",
    "MAX_CALLS_PER_PEER",
    "PREKEY_TAKE_TIMEOUT",
    "MailboxServer",
    "call_mailbox",
    "supports_mailbox",
    "take_prekey",
]

#: Seconds one call (open, request, response) may take: a full frame at a slow link's pace.
CALL_TIMEOUT = 30.0
#: Seconds a sender spends, all mailboxes together, getting a one-time prekey before its first message
#: (then it starts from what it knows: the invite's bundle, the DHT's); the send waits for it.
PREKEY_TAKE_TIMEOUT = 3.0
#: Seconds to find out whether a peer speaks the mailbox protocol.
PROBE_TIMEOUT = 10.0
#: Calls one peer may have open at once; more are reset (counted). A client makes its calls to one
#: mailbox in turn (sync, fetch, store); four leave room for a store racing a sync.
MAX_CALLS_PER_PEER = 4
#: Calls open at once, all peers together. Each may hold a request frame (1 MiB) and its answer for up
#: to ``CALL_TIMEOUT``; 256 calls is far beyond what honest clients of a volunteer mailbox make at once,
#: and their frames are capped by the ``BufferBudget`` besides. When all are taken, a new call ends the
#: oldest (counted ``EVICTED``), as the host closes its oldest unfinished handshake: PeerIds cost
#: nothing, so 64 identities stalling four calls each locked every other client out for as long as
#: they kept it up, while an honest call takes milliseconds and is never the oldest for long.
MAX_CALLS = 256
_READ_CHUNK = 64 * 1024
_PROTOCOL = TProtocol(MAILBOX_PROTOCOL)
#: The reasons ``MailboxServer.refused`` counts (beside the core's own).
BAD_REQUEST: Final = "bad request"
BAD_FRAME: Final = "bad frame"
BROKEN_STREAM: Final = "broken stream"
TIMED_OUT: Final = "timed out"
TOO_MANY_CALLS: Final = "too many calls"
EVICTED: Final = "evicted for a newer call"
BUFFER_FULL: Final = "buffer budget exceeded"
#: A network call's failures or its deadline passing.
_IO_OR_TIMEOUT: tuple[type[Exception], ...] = (*IO_ERRORS, trio.TooSlowError)
#: What makes a call fail on the network: those, or an answer cut short.
_CALL_ERRORS: tuple[type[Exception], ...] = (*_IO_OR_TIMEOUT, EOFError)


async def _read_frame(stream: INetStream, reader: FrameReader) -> bytes:
    """One length-prefixed frame; ``DecodeError``/``TooLarge`` if broken, ``QuotaExceeded`` if over the
    reader's budget, ``EOFError`` if it ends early. The caller releases ``reader``."""
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            raise EOFError("stream ended before a whole frame")
        frames = reader.feed(chunk)
        if frames:
            if len(frames) > 1 or reader.pending:
                raise DecodeError("mailbox frame", "more than one message on a call stream")
            return frames[0]


class MailboxServer:
    """Serves ``core`` on ``host``'s ``/meshchat/mailbox/1.0.0`` streams."""

    def __init__(
        self,
        host: IHost,
        core: MailboxCore,
        *,
        budget: BufferBudget | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Register the stream handler; request frames are charged to ``budget`` while they arrive
        (share the gossip driver's to bound both together); ``wall_clock`` gives the core its unix time."""
        self.core = core
        self._wall_clock = wall_clock
        self.budget = budget or BufferBudget()
        #: Streams refused before reaching the core, by reason.
        self.refused: Counter[str] = Counter()
        #: Streams closed before a request (peers checking that we are a mailbox).
        self.probes = 0
        # Calls open now, per peer (an entry is deleted at 0: at most one per connected peer).
        self._calls: dict[str, int] = {}
        # Every open call's cancel scope, oldest first (bounded: at most ``MAX_CALLS``).
        self._running: OrderedDict[trio.CancelScope, None] = OrderedDict()
        self._changed = trio.Event()
        host.set_stream_handler(_PROTOCOL, self._serve)

    def statistics(self) -> MailboxStatistics:
        """The core's statistics, with the streams refused before a request could be read (undecodable,
        broken, too many calls) added to ``refused``."""
        stats = self.core.statistics()
        if not self.refused:
            return stats
        refused = dict(stats.refused)
        for reason, count in self.refused.items():
            refused[reason] = refused.get(reason, 0) + count
        return dataclasses.replace(stats, refused=refused)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked each time a call ends, so nothing polls."""
        while not condition():
            await self._changed.wait()

    @property
    def open_calls(self) -> int:
        """Calls being served now."""
        return len(self._running)

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        if self._calls.get(peer, 0) >= MAX_CALLS_PER_PEER:
            self.refused[TOO_MANY_CALLS] += 1
            await _reset_quietly(stream)
            self._notify()
            return
        if len(self._running) >= MAX_CALLS:
            oldest, _ = self._running.popitem(last=False)
            oldest.cancel()  # its call resets its stream on the way out
            self.refused[EVICTED] += 1
        self._calls[peer] = self._calls.get(peer, 0) + 1
        scope = trio.CancelScope()
        self._running[scope] = None
        reader = FrameReader(self.budget, peer, max_frame_size=MAX_FRAME)
        try:
            with scope:
                await self._answer(peer, stream, reader)
            if scope.cancelled_caught:
                await _reset_quietly(stream)
        finally:
            reader.release()
            self._running.pop(scope, None)
            if self._calls[peer] == 1:
                del self._calls[peer]
            else:
                self._calls[peer] -= 1
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _answer(self, peer: str, stream: INetStream, reader: FrameReader) -> None:
        """Read the request, answer it, close the stream; or count why not and reset it."""
        with trio.move_on_after(CALL_TIMEOUT) as deadline:
            try:
                raw = await _read_frame(stream, reader)
            except EOFError:
                self.probes += 1
                await _close_quietly(stream)
                return
            except QuotaExceeded:
                self.refused[BUFFER_FULL] += 1
                await _reset_quietly(stream)
                return
            except DecodeError:  # the frame itself is broken (too long, or two on one call stream)
                self.refused[BAD_FRAME] += 1
                await _reset_quietly(stream)
                return
            except IO_ERRORS:  # the peer went away mid-call
                self.refused[BROKEN_STREAM] += 1
                await _reset_quietly(stream)
                return
            reader.release()  # the frame is whole: it is the core's to bound now
            try:
                request = decode_request(raw)
            except DecodeError as exc:  # TooLarge is one
                self.refused[BAD_REQUEST] += 1
                answer: MailboxResponse = MailboxError(code=ErrorCode.BAD_REQUEST, detail=str(exc))
            else:
                answer = self.core.handle(peer, request, wall_now=self._wall_clock())
            try:
                await stream.write(frame(encode_response(answer)))
            except IO_ERRORS:  # the peer went away before the answer
                self.refused[BROKEN_STREAM] += 1
                await _reset_quietly(stream)
                return
            await _close_quietly(stream)
        if deadline.cancelled_caught:  # a request or an answer not through in time (a slow peer)
            self.refused[TIMED_OUT] += 1
            await _reset_quietly(stream)


async def _close_quietly(stream: INetStream) -> None:
    with trio.move_on_after(PROBE_TIMEOUT), contextlib.suppress(*CLOSE_ERRORS):  # already reset
        await stream.close()


async def _reset_quietly(stream: INetStream) -> None:
    with trio.move_on_after(PROBE_TIMEOUT), contextlib.suppress(*CLOSE_ERRORS):  # already gone
        await stream.reset()


async def call_mailbox(
    host: IHost, peer: str, request: MailboxRequest, *, budget: BufferBudget | None = None
) -> MailboxResponse:
    """Send ``request`` to mailbox ``peer`` (connected) and return its answer (its frame charged to
    ``budget`` while it arrives, if given).

    Raises ``NetworkError`` if the call cannot be made or times out, ``DecodeError`` (or ``TooLarge``)
    if the answer is garbage.
    """
    data = frame(encode_request(request))
    reader = FrameReader(budget or BufferBudget(), peer, max_frame_size=MAX_FRAME)
    stream: INetStream | None = None
    try:
        with trio.fail_after(CALL_TIMEOUT):
            stream = await host.new_stream(ID.from_base58(peer), [_PROTOCOL])
            await stream.write(data)
            raw = await _read_frame(stream, reader)
    except QuotaExceeded as exc:
        raise NetworkError(f"mailbox call to {peer}", str(exc)) from exc
    except _CALL_ERRORS as exc:  # timeouts, resets, refusals, an answer cut short
        raise NetworkError(f"mailbox call to {peer}", str(exc) or type(exc).__name__) from exc
    finally:
        reader.release()
        if stream is not None:
            await _close_quietly(stream)
    return decode_response(raw)


async def supports_mailbox(host: IHost, peer: str) -> bool:
    """Whether ``peer`` (connected) serves the mailbox protocol: a stream to it negotiates."""
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            stream = await host.new_stream(ID.from_base58(peer), [_PROTOCOL])
    except _IO_OR_TIMEOUT:  # not supported, or the peer left: either way not a mailbox for us now
        return False
    await _reset_quietly(stream)
    return True


async def take_prekey(
    host: IHost, dialer: Dialer, owner: PublicIdentity, mailboxes: Sequence[str]
) -> PrekeyBundle | None:
    """``owner``'s prekey bundle from one of its ``mailboxes`` (multiaddrs ending in ``/p2p/<PeerId>``,
    an invite's; each dialled first if not connected, in order), within ``PREKEY_TAKE_TIMEOUT`` in all:
    the first with a one-time key, else the first without one, else None. A bundle whose signatures
    fail or that names another identity is skipped (a lying mailbox), as is an unusable address or a
    mailbox that cannot be called or refuses."""
    fallback: PrekeyBundle | None = None
    with trio.move_on_after(PREKEY_TAKE_TIMEOUT):
        for address in mailboxes:
            try:
                peer = str(peer_info(address).peer_id)
                if not dialer.connected_to(peer):
                    await dialer.connect(address)
                answer = await call_mailbox(host, peer, PrekeyTake(owner=owner.ed25519))
            except (NetworkError, DecodeError, BadAddress):
                continue
            if not isinstance(answer, PrekeyGiven) or answer.bundle.identity != owner.ed25519:
                continue
            try:
                answer.bundle.verify()
            except BadBundle:
                continue
            if answer.bundle.one_time:
                return answer.bundle
            fallback = fallback or answer.bundle
    return fallback
