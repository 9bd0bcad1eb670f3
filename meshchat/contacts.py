"""A profile's contacts: the verified invites of the people this user talks to.

Stored as ``contacts.json`` in the profile folder: a list of ``{"name": ..., "invite": "MESHCHAT:..."}``.
The invite text is kept as it was received (signed by its owner), so the file proves itself when read:
a contact whose invite no longer verifies is an error, not a silently different key. Writes are atomic
(temporary file, fsync, rename): a crash leaves the old list or the new one, never half of one.

Messages live in the profile's sqlite store (``store.db``); contacts stay here: the file is small,
edited rarely and readable by a person.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meshchat.errors import KeyChanged, MeshchatError, ProfileError, UnknownPeer
from meshchat.identity import PublicIdentity, replace_atomically
from meshchat.wire import Invite

if TYPE_CHECKING:
    from meshchat.net.dialer import Whereabouts

__all__ = ["CONTACTS_FILE", "MAX_CONTACTS", "Contact", "Contacts"]

#: The contacts file inside a profile folder.
CONTACTS_FILE = "contacts.json"
#: Most contacts one profile keeps (a bound on the file a peer's invites can grow).
MAX_CONTACTS = 10_000
#: Largest contacts file read, bytes (~3.4 KB per invite at most).
MAX_CONTACTS_FILE = MAX_CONTACTS * 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """Someone this user can send to: a name chosen locally and the invite they gave."""

    #: The local name (the invite's name unless the user chose another).
    name: str
    #: Their invite, verified.
    invite: Invite

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


class Contacts:
    """The contacts of one profile folder, loaded at construction, saved on every change."""

    def __init__(self, profile: Path) -> None:
        """Load ``profile``'s contacts (none if the file does not exist)."""
        self._path = profile / CONTACTS_FILE
        self._contacts: dict[str, Contact] = {c.peer_id: c for c in self._load()}

    def _load(self) -> list[Contact]:
        try:
            size = self._path.stat().st_size
            if size > MAX_CONTACTS_FILE:
                raise ProfileError(f"{self._path} is {size:,} bytes; the limit is {MAX_CONTACTS_FILE:,}")
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ProfileError(f"cannot read {self._path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ProfileError(f"{self._path} is not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("contacts"), list):
            raise ProfileError(f'{self._path} must be a JSON object with a "contacts" list')
        contacts = []
        for entry in data["contacts"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("invite"), str):
                raise ProfileError(f'{self._path}: every contact needs an "invite" string')
            try:
                invite = Invite.from_text(entry["invite"])
            except MeshchatError as exc:
                raise ProfileError(f"{self._path}: a stored invite no longer verifies ({exc})") from exc
            name = entry.get("name") if isinstance(entry.get("name"), str) else invite.name
            contacts.append(Contact(name=name or invite.name, invite=invite))
        return contacts

    def _save(self) -> None:
        entries = [{"name": c.name, "invite": c.invite.to_text()} for c in self._contacts.values()]
        data = json.dumps({"contacts": entries}, ensure_ascii=False, indent=2) + "\n"
        try:
            replace_atomically(self._path, data.encode("utf-8"))
        except OSError as exc:
            raise ProfileError(f"cannot write {self._path}: {exc.strerror or exc}") from exc

    def add(self, invite_text: str, *, name: str | None = None, replace_key: bool = False) -> Contact:
        """Verify ``invite_text`` and store it (replacing an older invite of the same key).

        A contact of the same name with another key is a changed safety number: ``KeyChanged``, unless
        ``replace_key`` (the user compared the new one), which replaces that contact."""
        invite = Invite.from_text(invite_text)
        contact = Contact(name=name or invite.name or invite.public.peer_id[-8:], invite=invite)
        others = [
            c for c in self._contacts.values() if c.name == contact.name and c.peer_id != contact.peer_id
        ]
        if others and not replace_key:
            old = others[0].invite.public.fingerprint
            raise KeyChanged(name=contact.name, old=old, new=invite.public.fingerprint)
        for other in others:
            del self._contacts[other.peer_id]
        if invite.public.peer_id not in self._contacts and len(self._contacts) >= MAX_CONTACTS:
            raise ProfileError(f"{self._path} already holds {MAX_CONTACTS:,} contacts")
        self._contacts[contact.peer_id] = contact
        self._save()
        return contact

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
