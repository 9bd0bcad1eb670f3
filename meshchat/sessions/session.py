"""Every 1:1 session with one peer device, and the bytes a session message is on the wire. Sans-IO.

A ``PeerSessions`` record holds up to ``MAX_SESSIONS`` Double Ratchet sessions with one peer device,
the active one first. Sending uses the active one, starting one first (``x3dh.initiate``) when there is
none: from the peer's prekey bundle when one is known (an invite, a published bundle), else from its
identity key alone. Until the peer answers on a session, every message on it carries the set-up
header, because the first ones may be lost or arrive last. Receiving tries each session's header keys
(a message opens under at most one); a message no session opens but that carries a set-up starts a
new session (``x3dh.respond``), which becomes the active one. So when both sides start a session at
once, each reads the other's, and each answers on the session it last received on: both end up on
one. Keeping a few sessions, not one, means messages still in flight (on a mailbox, for days) on a
session the peer replaced still open.

Wire form of a session message, the body of a sealed envelope (``meshchat.crypto.seal``)::

    0x01 || ratchet message                                   (``SESSION_MESSAGE``)
    0x02 || u16 length || set-up header || ratchet message    (``SESSION_SETUP``)

A receipt's body is a msgpack map (first byte 0x80-0x8f), so the first byte tells them apart.

Bounds: ``MAX_SESSIONS`` sessions per peer (the least recently used goes), ``MAX_SETUPS_REMEMBERED``
set-up ephemerals (a set-up whose ephemeral key was already answered is a replay: refused, never a
second session), and what ``Ratchet`` bounds (skipped keys). A failed ``decrypt`` changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshchat.errors import DecodeError, DecryptionFailed, NoSession, Replay
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.sessions.prekeys import PrekeyBundle, Prekeys
from meshchat.sessions.ratchet import Ratchet
from meshchat.sessions.x3dh import InitHeader, initiate, respond
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "MAX_SESSIONS",
    "MAX_SETUPS_REMEMBERED",
    "SESSION_MESSAGE",
    "SESSION_SETUP",
    "PeerSessions",
    "header_keys",
    "is_session_message",
]

#: First byte of a session message without a set-up header.
SESSION_MESSAGE = 0x01
#: First byte of a session message carrying a set-up header.
SESSION_SETUP = 0x02
#: Sessions kept per peer device: the active one, and older ones whose messages may still be in flight
#: (both sides starting at once makes two; a peer that lost its state and started again, a third).
MAX_SESSIONS = 4
#: Set-up ephemeral keys remembered per peer, to refuse a replayed set-up (a new session from old bytes).
MAX_SETUPS_REMEMBERED = 16
_INFO_HEADER_KEYS = b"meshchat header keys v1"
_K_SESSIONS, _K_SETUPS = 1, 2
_K_RATCHET, _K_INIT, _K_EPHEMERAL = 1, 2, 3
#: Decoding limit of one record: MAX_SESSIONS ratchets with their skipped keys (2,000 x ~80 bytes each).
_MAX_RECORD = 4 * 1024 * 1024


def is_session_message(body: bytes) -> bool:
    """Whether a sealed body is a session message (not a receipt)."""
    return bool(body) and body[0] in (SESSION_MESSAGE, SESSION_SETUP)


def header_keys(shared_secret: bytes) -> tuple[bytes, bytes]:
    """The initial header keys ``(hka, nhkb)`` of a session started from ``shared_secret``."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=bytes(32), info=_INFO_HEADER_KEYS).derive(
        shared_secret
    )
    return okm[:32], okm[32:]


@dataclass(slots=True)
class _Session:
    ratchet: Ratchet
    #: The encoded set-up header sent with every message until the peer answers (b"": none, or answered).
    init: bytes
    #: The set-up's ephemeral key (ours if we started it).
    ephemeral: bytes


def _split(data: bytes) -> tuple[bytes, bytes]:
    """``(set-up header or b"", ratchet message)`` of a session message."""
    if not data or data[0] not in (SESSION_MESSAGE, SESSION_SETUP):
        raise DecodeError("session message", "unknown kind")
    if data[0] == SESSION_MESSAGE:
        return b"", data[1:]
    if len(data) < 3:
        raise DecodeError("session message", "truncated set-up header")
    size = int.from_bytes(data[1:3], "big")
    if size == 0 or len(data) < 3 + size:
        raise DecodeError("session message", "set-up header length out of range")
    return data[3 : 3 + size], data[3 + size :]


class PeerSessions:
    """See the module docstring. Mutable; ``encode``/``decode`` for storage."""

    def __init__(self, sessions: list[_Session] | None = None, setups: list[bytes] | None = None) -> None:
        """An empty record (no session yet), or one decoded."""
        self._sessions: list[_Session] = sessions or []
        self._setups: list[bytes] = setups or []

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def awaiting_reply(self) -> bool:
        """Whether the active session is one we started and the peer has not answered yet."""
        return bool(self._sessions) and bool(self._sessions[0].init)

    def encrypt(
        self,
        me: Identity,
        peer: PublicIdentity,
        plaintext: bytes,
        *,
        bundle: PrekeyBundle | None,
        wall_now: float,
        random_bytes: RandomBytes,
    ) -> bytes:
        """The session message carrying ``plaintext`` to ``peer``, starting a session if there is none
        (from ``bundle``, or ``peer``'s identity key alone). ``BadBundle`` if ``bundle`` is bad."""
        if not self._sessions:
            started = initiate(me, peer, bundle, wall_now=wall_now, random_bytes=random_bytes)
            hka, nhkb = header_keys(started.shared_secret)
            ratchet = Ratchet.initiator(
                started.shared_secret,
                started.peer_ratchet_key,
                ad=started.ad,
                shared_hka=hka,
                shared_nhkb=nhkb,
                random_bytes=random_bytes,
            )
            self._push(_Session(ratchet, started.header.encode(), started.header.ephemeral))
        session = self._sessions[0]
        message = session.ratchet.encrypt(plaintext, random_bytes=random_bytes)
        if not session.init:
            return bytes((SESSION_MESSAGE,)) + message
        return bytes((SESSION_SETUP,)) + len(session.init).to_bytes(2, "big") + session.init + message

    def decrypt(
        self,
        me: Identity,
        prekeys: Prekeys,
        peer: PublicIdentity,
        data: bytes,
        *,
        wall_now: float,
        random_bytes: RandomBytes,
    ) -> tuple[bytes, Prekeys | None]:
        """Open session message ``data`` from ``peer``: ``(plaintext, prekeys)``, where ``prekeys`` is
        a changed copy of ``prekeys`` to adopt (a one-time prekey used) or None.

        Raises ``DecodeError`` (malformed), ``NoSession`` (no session opens it and it starts none),
        ``Replay`` (its key was used; or a set-up already answered), ``TooManySkipped``,
        ``DecryptionFailed``, ``UnknownPrekey``. On any error nothing changed."""
        setup, message = _split(data)
        for position, session in enumerate(self._sessions):
            plaintext = session.ratchet.decrypt(message, wall_now=wall_now, random_bytes=random_bytes)
            if plaintext is not None:
                session.init = b""  # the peer has this session: no need to send the set-up again
                if position:
                    self._sessions.insert(0, self._sessions.pop(position))
                return plaintext, None
        if not setup:
            raise NoSession(peer.peer_id)
        header = InitHeader.decode(setup)
        if header.ephemeral in self._setups or any(s.ephemeral == header.ephemeral for s in self._sessions):
            raise Replay(message_id=header.ephemeral)
        trial = prekeys.copy()  # kept only if the first message opens (a forged set-up burns nothing)
        shared, ad, own_ratchet = respond(me, trial, peer, header)
        hka, nhkb = header_keys(shared)
        ratchet = Ratchet.responder(shared, own_ratchet, ad=ad, shared_hka=hka, shared_nhkb=nhkb)
        plaintext = ratchet.decrypt(message, wall_now=wall_now, random_bytes=random_bytes)
        if plaintext is None:
            raise DecryptionFailed()
        self._push(_Session(ratchet, b"", header.ephemeral))
        self._setups.append(header.ephemeral)
        del self._setups[:-MAX_SETUPS_REMEMBERED]
        return plaintext, trial if header.one_time_id else None

    def _push(self, session: _Session) -> None:
        self._sessions.insert(0, session)
        del self._sessions[MAX_SESSIONS:]

    def encode(self) -> bytes:
        """The record's bytes for storage."""
        sessions = [
            {_K_RATCHET: s.ratchet.encode(), _K_INIT: s.init, _K_EPHEMERAL: s.ephemeral}
            for s in self._sessions
        ]
        return pack({_K_SESSIONS: sessions, _K_SETUPS: list(self._setups)})

    @classmethod
    def decode(cls, data: bytes) -> PeerSessions:
        """A record from ``encode``'s bytes; ``DecodeError`` if they are not one."""
        fields = unpack_canonical(data, what="session record", limit=_MAX_RECORD)
        if not isinstance(fields, dict) or fields.keys() != {_K_SESSIONS, _K_SETUPS}:
            raise DecodeError("session record", "not a session record")
        raw_sessions, setups = fields[_K_SESSIONS], fields[_K_SETUPS]
        if not isinstance(raw_sessions, tuple | list) or len(raw_sessions) > MAX_SESSIONS:
            raise DecodeError("session record", "sessions out of range")
        if not isinstance(setups, tuple | list) or len(setups) > MAX_SETUPS_REMEMBERED:
            raise DecodeError("session record", "set-ups out of range")
        sessions = []
        for raw in raw_sessions:
            if not isinstance(raw, dict) or raw.keys() != {_K_RATCHET, _K_INIT, _K_EPHEMERAL}:
                raise DecodeError("session record", "not a session")
            ratchet, init, ephemeral = raw[_K_RATCHET], raw[_K_INIT], raw[_K_EPHEMERAL]
            if type(ratchet) is not bytes or type(init) is not bytes or type(ephemeral) is not bytes:
                raise DecodeError("session record", "session fields must be bytes")
            sessions.append(_Session(Ratchet.decode(ratchet), init, ephemeral))
        if any(type(e) is not bytes for e in setups):
            raise DecodeError("session record", "set-up keys must be bytes")
        return cls(sessions, list(setups))
