"""A profile's contacts: the verified invites of the people this user talks to, how far the user
checked each key, the names the user gave them, and the people (contacts or strangers) they blocked.

Stored as ``contacts.json`` in the profile folder::

    {"contacts": [{"name": "Bob", "invite": "MESHCHAT:...", "petname": null, "verification": "verified"}],
     "blocked": ["12D3KooW..."]}

The invite text is kept as it was received (signed by its owner), so the file proves itself when read:
a contact whose invite no longer verifies is an error, not a silently different key. Writes are atomic
(temporary file, fsync, rename): a crash leaves the old list or the new one, never half of one.

**Names.** ``Contact.claimed_name`` is what the invite says (anyone can claim any name);
``Contact.petname`` is the user's own name for them (None: none chosen); ``Contact.name`` shows the
petname if there is one, else the claimed name, and finds the contact (``Contacts.find``), so no two
contacts show under the same name (``NameTaken``).

**Verification** (``Verification``; transitions in ``TRANSITIONS``): a new contact is ``UNVERIFIED``
(``VERIFIED`` if added with ``verified=True``: a QR code scanned in person); ``verify`` makes it
``VERIFIED`` after the user compared the safety number. A new key under a known name is refused
(``KeyChanged``) unless ``replace_key=True``, and then the contact is ``CHANGED``: ``Node.send`` refuses
it (``KeyNotConfirmed``) until the user accepts the new key (``accept_key``: back to ``UNVERIFIED``)
or verifies it.

**Blocking.** ``block`` takes a contact or any key (a stranger who wrote); ``Node`` drops their direct
messages after opening them (see ``meshchat.store.messenger``). At most ``MAX_CONTACTS`` keys are
blocked, the same bound as the contacts themselves.

**Older files.** A file written before petnames, verification and blocking has only ``name`` and
``invite`` per contact: a ``name`` other than the invite's is read as a petname, every contact as
``UNVERIFIED``, and nobody as blocked. New files still carry ``name`` (the shown name), so an older
meshchat reads them as before. No migration step: the new keys are optional.

Messages live in the profile's sqlite store (``store.db``); contacts stay here: the file is small,
edited rarely and readable by a person.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshchat.errors import (
    BadPetname,
    DecodeError,
    KeyChanged,
    KeyNotConfirmed,
    MeshchatError,
    NameTaken,
    ProfileError,
    UnknownPeer,
)
from meshchat.identity import PublicIdentity, replace_atomically
from meshchat.wire import Invite
from meshchat.wire.invite import MAX_NAME_LENGTH

if TYPE_CHECKING:
    from meshchat.net.dialer import Whereabouts

__all__ = [
    "CONTACTS_FILE",
    "MAX_CONTACTS",
    "MAX_PETNAME_LENGTH",
    "TRANSITIONS",
    "Contact",
    "Contacts",
    "Verification",
    "VerificationInput",
]

#: The contacts file inside a profile folder.
CONTACTS_FILE = "contacts.json"
#: Most contacts one profile keeps (a bound on the file a peer's invites can grow); also the most keys
#: one profile blocks.
MAX_CONTACTS = 10_000
#: Largest contacts file read, bytes (~3.4 KB per invite at most, ~60 bytes per blocked key).
MAX_CONTACTS_FILE = MAX_CONTACTS * 4096
#: Longest petname, in characters: the same bound as the name an invite claims.
MAX_PETNAME_LENGTH = MAX_NAME_LENGTH
#: Format characters a name may hold (joiners: emoji sequences, Persian, Hindi), as invites allow.
_ALLOWED_FORMAT_CHARACTERS = frozenset("\u200c\u200d")


class Verification(Enum):
    """How far the user checked a contact's key."""

    #: Never compared.
    UNVERIFIED = "unverified"
    #: The user compared the safety number or scanned the QR in person.
    VERIFIED = "verified"
    #: The key changed since; sending raises ``KeyNotConfirmed`` until accepted.
    CHANGED = "changed"


class VerificationInput(Enum):
    """What moves a contact's ``Verification``."""

    #: The user compared the safety number (``Contacts.verify``; ``add(..., verified=True)``).
    VERIFY = "verify"
    #: A new key replaced the contact's old one (``add(..., replace_key=True)``).
    KEY_REPLACED = "key replaced"
    #: The user saw the changed-key warning and accepts the new key (``Contacts.accept_key``).
    ACCEPT_KEY = "accept key"
    #: The same key's invite again (new addresses): nothing about the key changed.
    SAME_KEY = "same key"


_V, _I = Verification, VerificationInput
#: ``(state, input) -> state``: every pair is listed, so the table reads whole.
TRANSITIONS: dict[tuple[Verification, VerificationInput], Verification] = {
    (_V.UNVERIFIED, _I.VERIFY): _V.VERIFIED,
    (_V.VERIFIED, _I.VERIFY): _V.VERIFIED,
    (_V.CHANGED, _I.VERIFY): _V.VERIFIED,
    (_V.UNVERIFIED, _I.KEY_REPLACED): _V.CHANGED,
    (_V.VERIFIED, _I.KEY_REPLACED): _V.CHANGED,
    (_V.CHANGED, _I.KEY_REPLACED): _V.CHANGED,
    (_V.UNVERIFIED, _I.ACCEPT_KEY): _V.UNVERIFIED,
    (_V.VERIFIED, _I.ACCEPT_KEY): _V.VERIFIED,
    (_V.CHANGED, _I.ACCEPT_KEY): _V.UNVERIFIED,
    (_V.UNVERIFIED, _I.SAME_KEY): _V.UNVERIFIED,
    (_V.VERIFIED, _I.SAME_KEY): _V.VERIFIED,
    (_V.CHANGED, _I.SAME_KEY): _V.CHANGED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """Someone this user can send to: the invite they gave, the user's name for them, how far the
    user checked their key."""

    #: The name shown and looked up: the petname if set, else the name the invite claims.
    name: str
    #: Their invite, verified.
    invite: Invite
    #: The user's own name for them (None: none chosen).
    petname: str | None = None
    #: How far the user checked their key.
    verification: Verification = Verification.UNVERIFIED

    @property
    def claimed_name(self) -> str:
        """What their invite says their name is (their claim, checked by nobody)."""
        return self.invite.name

    @property
    def public(self) -> PublicIdentity:
        """Their public key."""
        return self.invite.public

    @property
    def peer_id(self) -> str:
        """Their PeerId."""
        return self.invite.public.peer_id

    @property
    def addrs(self) -> tuple[str, ...]:
        """Where their invite says they can be reached."""
        return self.invite.addrs

    @property
    def mailboxes(self) -> tuple[str, ...]:
        """The mailboxes their invite says they sync from (messages for them are stored there)."""
        return self.invite.mailboxes

    def whereabouts(self) -> Whereabouts:
        """Where the dialer looks for this contact."""
        from meshchat.net.dialer import Whereabouts  # noqa: PLC0415 (py-libp2p only when dialling)

        return Whereabouts(peer_id=self.peer_id, addrs=self.addrs, mailboxes=self.mailboxes)


def _make(invite: Invite, petname: str | None, verification: Verification) -> Contact:
    """A contact, its shown name worked out from its petname and its invite."""
    shown = petname or invite.name or invite.public.peer_id[-8:]
    return Contact(name=shown, invite=invite, petname=petname, verification=verification)


def _check_petname(petname: str) -> str:
    """``petname`` if it can name a contact (``BadPetname`` if not): the rules of invite names."""
    if not petname.strip():
        raise BadPetname("it is empty")
    if len(petname) > MAX_PETNAME_LENGTH:
        raise BadPetname(f"it has {len(petname)} characters; the limit is {MAX_PETNAME_LENGTH}")
    if any(
        unicodedata.category(ch).startswith("C") and ch not in _ALLOWED_FORMAT_CHARACTERS for ch in petname
    ):
        raise BadPetname("it contains control, format or unassigned characters")
    return unicodedata.normalize("NFC", petname)


class Contacts:
    """The contacts of one profile folder, loaded at construction, saved on every change.

    One process at a time changes a profile's contacts: a running ``Node`` keeps them in memory and
    writes the whole file on each change, so the ``meshchat contact`` commands that change them refuse
    while a node runs on the profile (they would be written over).
    """

    def __init__(self, profile: Path) -> None:
        """Load ``profile``'s contacts (none if the file does not exist)."""
        self._path = profile / CONTACTS_FILE
        contacts, blocked = self._load()
        self._contacts: dict[str, Contact] = {c.peer_id: c for c in contacts}
        #: Blocked keys, by their Ed25519 bytes, in the order they were blocked.
        self._blocked: dict[bytes, PublicIdentity] = {p.ed25519: p for p in blocked}

    # --- the file ----------------------------------------------------------------------------------

    def _load(self) -> tuple[list[Contact], list[PublicIdentity]]:
        try:
            size = self._path.stat().st_size
            if size > MAX_CONTACTS_FILE:
                raise ProfileError(f"{self._path} is {size:,} bytes; the limit is {MAX_CONTACTS_FILE:,}")
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise ProfileError(f"cannot read {self._path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ProfileError(f"{self._path} is not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("contacts"), list):
            raise ProfileError(f'{self._path} must be a JSON object with a "contacts" list')
        contacts = [self._entry(entry) for entry in data["contacts"]]
        blocked = data.get("blocked", [])
        if not isinstance(blocked, list) or len(blocked) > MAX_CONTACTS:
            raise ProfileError(f'{self._path}: "blocked" must be a list of at most {MAX_CONTACTS:,} PeerIds')
        keys = []
        for peer_id in blocked:
            try:
                keys.append(PublicIdentity.from_peer_id(peer_id if isinstance(peer_id, str) else ""))
            except DecodeError as exc:
                raise ProfileError(f"{self._path}: a blocked PeerId is not usable ({exc})") from exc
        return contacts, keys

    def _entry(self, entry: Any) -> Contact:
        """One contact of the file (``name`` and ``invite``; since petnames also ``petname`` and
        ``verification``)."""
        if not isinstance(entry, dict) or not isinstance(entry.get("invite"), str):
            raise ProfileError(f'{self._path}: every contact needs an "invite" string')
        try:
            invite = Invite.from_text(entry["invite"])
        except MeshchatError as exc:
            raise ProfileError(f"{self._path}: a stored invite no longer verifies ({exc})") from exc
        if "petname" in entry:  # written by this version: the shown name follows from it
            petname = entry["petname"]
            if petname is not None and not isinstance(petname, str):
                raise ProfileError(f'{self._path}: a contact\'s "petname" must be a string or null')
        else:  # an older file: a name the user chose is a petname
            name = entry.get("name") if isinstance(entry.get("name"), str) else None
            petname = name if name and name != invite.name else None
        try:
            verification = Verification(entry.get("verification", Verification.UNVERIFIED.value))
        except ValueError as exc:
            raise ProfileError(
                f"{self._path}: unknown verification state {entry.get('verification')!r}"
            ) from exc
        return _make(invite, petname or None, verification)

    def _save(self) -> None:
        entries = [
            {
                "name": c.name,
                "invite": c.invite.to_text(),
                "petname": c.petname,
                "verification": c.verification.value,
            }
            for c in self._contacts.values()
        ]
        blocked = [p.peer_id for p in self._blocked.values()]
        data = json.dumps({"contacts": entries, "blocked": blocked}, ensure_ascii=False, indent=2) + "\n"
        try:
            replace_atomically(self._path, data.encode("utf-8"))
        except OSError as exc:
            raise ProfileError(f"cannot write {self._path}: {exc.strerror or exc}") from exc

    # --- adding and naming ---------------------------------------------------------------------------

    def add(
        self, invite_text: str, *, name: str | None = None, replace_key: bool = False, verified: bool = False
    ) -> Contact:
        """Verify ``invite_text`` and store it (replacing an older invite of the same key).

        ``name`` is the user's name for them (a petname; default: the name the invite claims). A
        contact of the same name with another key is a changed safety number: ``KeyChanged``, unless
        ``replace_key``, which replaces that contact and marks the new one ``CHANGED`` (sending to it
        waits for ``accept_key`` or ``verify``). ``verified``: the user checked this key in person (a
        QR code scanned face to face): ``VERIFIED``, even for a replaced key. The same key again keeps
        its verification and petname (unless ``name`` gives another)."""
        invite = Invite.from_text(invite_text)
        petname = _check_petname(name) if name else None
        petname = None if petname == invite.name else petname
        known = self._contacts.get(invite.public.peer_id)
        if known is not None and name is None:
            petname = known.petname
        contact = _make(invite, petname, Verification.UNVERIFIED)
        others = [
            c for c in self._contacts.values() if c.name == contact.name and c.peer_id != contact.peer_id
        ]
        if others and not replace_key:
            old = others[0].invite.public.fingerprint
            raise KeyChanged(name=contact.name, old=old, new=invite.public.fingerprint)
        if known is None and len(self._contacts) - len(others) >= MAX_CONTACTS:
            raise ProfileError(f"{self._path} already holds {MAX_CONTACTS:,} contacts")
        if known is not None:
            state = TRANSITIONS[known.verification, _I.SAME_KEY]
        elif others:
            state = TRANSITIONS[others[0].verification, _I.KEY_REPLACED]
        else:
            state = Verification.UNVERIFIED
        if verified:
            state = TRANSITIONS[state, _I.VERIFY]
        for other in others:
            del self._contacts[other.peer_id]
        contact = replace(contact, verification=state)
        self._contacts[contact.peer_id] = contact
        self._save()
        return contact

    def rename(self, who: str, petname: str | None) -> Contact:
        """Give contact ``who`` the name ``petname`` (None or "": back to the name their invite claims).
        ``NameTaken`` if another contact shows under that name, ``BadPetname`` for an unusable one."""
        contact = self.find(who)
        chosen = _check_petname(petname) if petname else None
        chosen = None if chosen == contact.claimed_name else chosen
        renamed = _make(contact.invite, chosen, contact.verification)
        if any(c.name == renamed.name and c.peer_id != contact.peer_id for c in self._contacts.values()):
            raise NameTaken(renamed.name)
        return self._put(renamed)

    # --- verification --------------------------------------------------------------------------------

    def verify(self, who: str) -> Contact:
        """The user compared ``who``'s safety number (or scanned their QR code in person): ``VERIFIED``."""
        return self._move(who, _I.VERIFY)

    def accept_key(self, who: str) -> Contact:
        """The user saw that ``who``'s key changed and accepts the new one: ``CHANGED`` becomes
        ``UNVERIFIED`` (sending works again); any other state stays as it is."""
        return self._move(who, _I.ACCEPT_KEY)

    def confirm_key(self, public: PublicIdentity) -> None:
        """``KeyNotConfirmed`` if ``public`` is a contact whose key changed and was not accepted yet."""
        contact = self._contacts.get(public.peer_id)
        if contact is not None and contact.verification is Verification.CHANGED:
            raise KeyNotConfirmed(contact.name, public.fingerprint)

    def _move(self, who: str, event: VerificationInput) -> Contact:
        contact = self.find(who)
        state = TRANSITIONS[contact.verification, event]
        return contact if state is contact.verification else self._put(replace(contact, verification=state))

    def _put(self, contact: Contact) -> Contact:
        self._contacts[contact.peer_id] = contact
        self._save()
        return contact

    # --- blocking ------------------------------------------------------------------------------------

    def block(self, who: str | PublicIdentity) -> None:
        """Block ``who`` (a contact's name or PeerId, a stranger's PeerId, or a key): their direct
        messages are dropped unread by the app from now on. Blocking twice is blocking once.
        ``ProfileError`` beyond ``MAX_CONTACTS`` blocked keys; ``UnknownPeer`` for a name that is no
        contact's and no PeerId."""
        public = self._key(who)
        if public.ed25519 in self._blocked:
            return
        if len(self._blocked) >= MAX_CONTACTS:
            raise ProfileError(f"{self._path} already blocks {MAX_CONTACTS:,} keys")
        self._blocked[public.ed25519] = public
        self._save()

    def unblock(self, who: str | PublicIdentity) -> None:
        """Let ``who``'s messages in again (from now on: what was dropped stays dropped)."""
        public = self._key(who)
        if self._blocked.pop(public.ed25519, None) is not None:
            self._save()

    def is_blocked(self, public: PublicIdentity) -> bool:
        """Whether ``public`` is blocked."""
        return public.ed25519 in self._blocked

    def is_blocked_key(self, ed25519: bytes) -> bool:
        """Whether the Ed25519 key ``ed25519`` (raw bytes, as the store holds them) is blocked."""
        return ed25519 in self._blocked

    def blocked(self) -> list[PublicIdentity]:
        """The blocked keys, in the order they were blocked."""
        return list(self._blocked.values())

    def _key(self, who: str | PublicIdentity) -> PublicIdentity:
        """The key ``who`` names: a key itself, a contact's name or PeerId, or any PeerId."""
        if isinstance(who, PublicIdentity):
            return who
        try:
            return self.find(who).public
        except UnknownPeer:
            try:
                return PublicIdentity.from_peer_id(who)
            except DecodeError:
                raise UnknownPeer(who) from None

    # --- looking up ----------------------------------------------------------------------------------

    def find(self, who: str) -> Contact:
        """The contact named ``who``, or whose PeerId is ``who``; ``UnknownPeer`` if none (or several)."""
        if who in self._contacts:
            return self._contacts[who]
        named = [c for c in self._contacts.values() if c.name == who]
        if len(named) != 1:
            raise UnknownPeer(who if not named else f"{who} (several contacts have that name)")
        return named[0]

    def by_key(self, public: PublicIdentity) -> Contact | None:
        """The contact with this key, if there is one."""
        return self._contacts.get(public.peer_id)

    def __iter__(self) -> Iterator[Contact]:
        return iter(list(self._contacts.values()))

    def __len__(self) -> int:
        return len(self._contacts)
