"""``node.devices``: several devices per person, the application's side (link, approve, list, remove).

```python
# on the NEW device (a fresh profile, its node running):
request = node.devices.link(name="laptop")       # show request.to_text() / request.qr(), and request.code()
linked = await node.devices.wait_linked(600)     # the primary approved: contacts, name and root invite copied

# on the primary (the device holding the person's root key):
approved = await node.devices.approve(text, code="123456")   # code: what the new device shows
node.devices.list()                                          # [DeviceEntry(name, key, ...), ...]
await node.devices.remove("laptop")                          # nothing sent afterwards reaches it
```

A thin facade over the store layer (``Messenger.link_request`` / ``approve_link`` / ``remove_device``
/ ``send_device_list``, ``meshchat.store.devices``); see DEVICES.md and ``meshchat.identity.devices``
for the model. What it adds is the node's part:

- **approve** parses and checks the request (its six-digit code, when the caller passes the one the
  new device shows), dials the new device at the addresses in the request, and hands it a *snapshot*
  to start from: JSON ``{"name", "invite", "contacts": [{"name", "invite"}, ...]}``, the profile's
  name, the root's own invite (with its prekey bundle, so the new device starts forward-secret
  sessions with its own person's root) and the contacts' invites, trimmed to ``MAX_SNAPSHOT`` (the
  contacts that do not fit are left out and counted). Then every contact is sent the new list, so
  they seal to the new device from then on (and learn "Alice added a device"). A request is approved
  once: its nonce is remembered (``APPROVED_FILE``) while the request could still be accepted, so a
  device removed meanwhile cannot be brought back by showing its old request again.
- **remove** signs the list without the device and sends it to every contact and our other devices:
  from then on nothing sealed by any of them goes to the removed key.
- On the new device, the ``Linked`` event (the grant) writes the snapshot into the profile: each
  contact (``contacts.json``), the profile name (``profile.json``) and the root's invite
  (``ROOT_INVITE_FILE``, read again at every start: the root is dialled and its bundle used), then
  dials the root (its addresses and mailboxes).

Where devices are: ``whereabouts`` tells the node's dialer where a device key that is not a contact
may be found (the node asks it when a message to that key is retried): our root at its invite's
addresses, a device this node approved at its request's addresses (kept in memory, at most
``MAX_DEVICES``), any other device of a contact's (or of ours) at the person's mailboxes and by the
DHT.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from meshchat.contacts import Contact, Contacts
from meshchat.errors import (
    BadAddress,
    BadInvite,
    DeviceError,
    LinkCodeMismatch,
    MeshchatError,
    NetworkError,
    NotPrimary,
    ProfileError,
    UnknownDevice,
)
from meshchat.identity import Identity, PublicIdentity, replace_atomically
from meshchat.identity.devices import (
    LINK_CLOCK_SKEW,
    LINK_REQUEST_TTL,
    MAX_ADDR_LENGTH,
    MAX_ADDRS,
    MAX_DEVICES,
    Device,
    DeviceList,
    LinkRequest,
)
from meshchat.net.dialer import Whereabouts
from meshchat.net.store_driver import MessageHandle, StoreDriver
from meshchat.profile import ADDRESSES_FILE
from meshchat.store.messenger import Action, Linked, Messenger, PublishEnvelope
from meshchat.store.payload import MAX_SNAPSHOT
from meshchat.wire import Invite

__all__ = [
    "APPROVED_FILE",
    "MAX_APPROVED",
    "PRIMARY_NAME",
    "PROFILE_NAME_FILE",
    "ROOT_INVITE_FILE",
    "DeviceEntry",
    "DeviceRemoved",
    "Devices",
    "LinkApproved",
    "decode_snapshot",
    "encode_snapshot",
]

#: The root's invite inside a linked device's profile folder (a linked device cannot sign one: it
#: hands out its root's, and dials the root from it).
ROOT_INVITE_FILE = "root_invite.txt"
#: On the primary: the link requests approved in the last ``LINK_REQUEST_TTL`` seconds (their nonces),
#: so one request cannot be approved twice (a device removed meanwhile would come back).
APPROVED_FILE = "approved_links.json"
#: Most approved requests remembered: each approval is a person comparing codes, so a few a minute
#: at most while requests live (ten minutes); beyond it the oldest is forgotten.
MAX_APPROVED = 64
#: The profile's display name file (as ``meshchat init`` writes it).
PROFILE_NAME_FILE = "profile.json"
#: The primary's name in the list made at its first link (unless ``approve`` is told another).
PRIMARY_NAME = "primary"
#: Largest root invite file read, bytes (an invite is at most 4,096 characters).
_MAX_INVITE_FILE = 8192
#: Largest ``addresses.json`` read, bytes (a handful of multiaddrs).
_MAX_ADDRESSES_FILE = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEntry:
    """One of this person's devices, as ``node.devices.list()`` shows it."""

    #: The name the person gave it.
    name: str
    #: Its public key (its PeerId: ``public.peer_id``).
    public: PublicIdentity
    #: When the root added it, unix seconds (0 for a primary that never linked a device).
    added: int
    #: Whether it holds the root key (the primary).
    primary: bool
    #: Whether it is the device this node runs on.
    this: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkApproved:
    """What ``approve`` did."""

    #: The device added.
    device: Device
    #: The new list (signed, version + 1).
    devices: DeviceList
    #: The grant sent to the new device (its status: delivered once the new device has it).
    grant: MessageHandle
    #: Contacts whose invites went into the snapshot, and those left out to fit ``MAX_SNAPSHOT``.
    contacts: int
    left_out: int
    #: The new list on its way to each contact (one message per contact: its first device's record).
    lists: tuple[MessageHandle, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRemoved:
    """What ``remove`` did."""

    #: The device removed.
    device: Device
    #: The new list (signed, version + 1).
    devices: DeviceList
    #: The new list on its way to each contact.
    lists: tuple[MessageHandle, ...]


def encode_snapshot(name: str, invite: str, contacts: Sequence[tuple[str, str]]) -> tuple[bytes, int]:
    """The snapshot JSON for a new device and how many contacts were left out to fit ``MAX_SNAPSHOT``
    (the first contacts are kept). ``DeviceError`` if even the name and invite do not fit."""
    entries = [{"name": n, "invite": i} for n, i in contacts]
    kept = len(entries)

    def encoded(count: int) -> bytes:
        value = {"name": name, "invite": invite, "contacts": entries[:count]}
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    data = encoded(kept)
    if len(data) > MAX_SNAPSHOT:
        low, high = 0, kept  # the most contacts that fit: binary search, each try one encoding
        while low < high:
            middle = (low + high + 1) // 2
            if len(encoded(middle)) <= MAX_SNAPSHOT:
                low = middle
            else:
                high = middle - 1
        kept, data = low, encoded(low)
        if len(data) > MAX_SNAPSHOT:
            raise DeviceError(f"the profile name and invite alone exceed {MAX_SNAPSHOT:,} bytes")
    return data, len(entries) - kept


def decode_snapshot(data: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """``(name, root invite text, [(contact name, invite text), ...])``; ``DeviceError`` if malformed."""
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise DeviceError(f"the primary's snapshot is not UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DeviceError("the primary's snapshot is not a JSON object")
    name, invite, contacts = value.get("name"), value.get("invite"), value.get("contacts")
    if not isinstance(name, str) or not isinstance(invite, str) or not isinstance(contacts, list):
        raise DeviceError('the primary\'s snapshot needs "name", "invite" and "contacts"')
    pairs = []
    for entry in contacts:
        if isinstance(entry, dict) and isinstance(entry.get("invite"), str):
            entry_name = entry.get("name")
            pairs.append((entry_name if isinstance(entry_name, str) else "", entry["invite"]))
    return name, invite, pairs


class Devices:
    """See the module docstring. Built by ``Node``; applications use ``node.devices``."""

    def __init__(
        self,
        identity: Identity,
        *,
        messenger: Messenger,
        store: StoreDriver,
        contacts: Contacts | None,
        profile: Path | None,
        wall_clock: Callable[[], float],
        wait_for: Callable[[Callable[[], bool]], Awaitable[None]],
        connect: Callable[[str], Awaitable[None]],
        reach: Callable[[Whereabouts], Awaitable[bool]],
        use_invite: Callable[[Contact], None],
        addrs: Callable[[], list[str]],
    ) -> None:
        """Used by ``Node``: ``connect`` dials an address, ``reach`` a peer's whereabouts, ``use_invite``
        takes an invite's mailboxes and bundle for sealing, ``addrs`` are this node's dialable ones."""
        self._identity = identity
        self._messenger = messenger
        self._book = messenger.devices
        self._store = store
        self._contacts = contacts
        self._profile = profile
        self._now = wall_clock
        self._wait_for = wait_for
        self._connect = connect
        self._reach = reach
        self._use_invite = use_invite
        self._addrs = addrs
        self._nursery: trio.Nursery | None = None
        #: The grant this node received (None until it is linked, or on a primary).
        self.linked: Linked | None = None
        #: The root's invite (a linked device's, read from ``ROOT_INVITE_FILE``).
        self.root_invite: Invite | None = self._read_root_invite()
        # The addresses the profile's node recorded before this one started (it writes its own).
        self._recorded = self._read_recorded()
        # Where devices this node approved listen (their request's addresses): at most MAX_DEVICES.
        self._approved_addrs: dict[bytes, tuple[str, ...]] = {}
        # Requests approved (nonce in hex -> until when a request that old is accepted), for a node
        # without a profile folder; with one, ``APPROVED_FILE`` is read and written instead.
        self._approved: dict[str, int] = {}

    # --- the node's hooks ---------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """The node runs: a linked device uses its root's invite and dials the root (in ``nursery``)."""
        self._nursery = nursery
        if self.root_invite is not None:
            self._use_invite(Contact(name="", invite=self.root_invite))
            nursery.start_soon(self._reach_root)

    def on_linked(self, event: Linked) -> None:
        """The primary's grant arrived (the store committed it): write the snapshot into the profile,
        then dial the root. A snapshot that is malformed, or invites that do not verify, are skipped:
        the link itself (the list) holds."""
        self.linked = event
        try:
            name, invite_text, contacts = decode_snapshot(event.snapshot)
        except DeviceError:
            return
        with contextlib.suppress(MeshchatError):
            invite = Invite.from_text(invite_text)
            if invite.public == event.root:
                self.root_invite = invite
                self._write_file(ROOT_INVITE_FILE, invite_text.strip() + "\n")
                self._use_invite(Contact(name=name, invite=invite))
        if name:
            with contextlib.suppress(ProfileError):
                data = json.dumps({"name": name}, ensure_ascii=False, indent=2) + "\n"
                self._write_file(PROFILE_NAME_FILE, data)
        if self._contacts is not None:
            for contact_name, text in contacts:
                with contextlib.suppress(MeshchatError):
                    self._use_invite(self._contacts.add(text, name=contact_name or None))
        if self._nursery is not None and self.root_invite is not None:
            self._nursery.start_soon(self._reach_root)

    def whereabouts(self, public: PublicIdentity) -> Whereabouts | None:
        """Where the device key ``public`` (not a contact) may be found, if a list we send by names it:
        our root at its invite, a device we approved at its request's addresses, another device of
        ours or of a contact's at the person's mailboxes and by the DHT. (Sending there is what the
        list asked for; whose device it is when it writes to us is ``DeviceBook.owner_of``'s rule.)"""
        key = public.ed25519
        if self.root_invite is not None and key == self.root_invite.public.ed25519:
            invite = self.root_invite
            return Whereabouts(peer_id=public.peer_id, addrs=invite.addrs, mailboxes=invite.mailboxes)
        if key in self._approved_addrs:
            return Whereabouts(peer_id=public.peer_id, addrs=self._approved_addrs[key])
        own = self._book.own_list
        if own is not None and key in own.keys():  # noqa: SIM118 (a method, not a dict)
            mailboxes = self.root_invite.mailboxes if self.root_invite is not None else ()
            return Whereabouts(peer_id=public.peer_id, mailboxes=mailboxes)
        for contact in self._contacts or ():
            devices = self._book.list_of(contact.public.ed25519)
            if devices is not None and key in devices.keys():  # noqa: SIM118 (a method, not a dict)
                return Whereabouts(peer_id=public.peer_id, mailboxes=contact.mailboxes)
        return None  # nobody's device that we send to

    # --- reading --------------------------------------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        """Whether this device holds the person's root key (it links and removes devices)."""
        return self._book.is_primary

    @property
    def root(self) -> PublicIdentity:
        """The person this device belongs to (its own key on a primary)."""
        return PublicIdentity.from_bytes(self._book.root)

    def list(self) -> list[DeviceEntry]:
        """This person's devices, the primary first (just this one while it never linked a device)."""
        own = self._book.own_list
        me = self._identity.public.ed25519
        if own is None:
            public = self._identity.public
            return [DeviceEntry(name=PRIMARY_NAME, public=public, added=0, primary=True, this=True)]
        return [
            DeviceEntry(
                name=d.name, public=d.public, added=d.added, primary=d.key == own.root, this=d.key == me
            )
            for d in own.devices
        ]

    def list_of(self, person: Contact | PublicIdentity) -> DeviceList | None:
        """A contact's newest known device list (None: one device, or never told)."""
        public = person.public if isinstance(person, Contact) else person
        return self._book.list_of(public.ed25519)

    # --- the new device -------------------------------------------------------------------------------

    def link(self, *, name: str) -> LinkRequest:
        """Make the request to show the primary (its text, ``qr()``, ``code()``), with this node's
        dialable addresses. ``DeviceError`` on a profile that is not new (it has a device list,
        contacts or sent messages: its snapshot would replace them), ``ValueError`` for a bad name."""
        if not self._book.is_primary or self._book.own_list is not None:
            raise DeviceError("this profile already belongs to a person's devices")
        if self._contacts is not None and len(self._contacts):
            raise DeviceError("link a new profile: this one has contacts (the primary's would replace them)")
        if self._messenger.storage.outbox_recent(1):
            raise DeviceError("link a new profile: this one has sent messages")
        addrs = [a for a in self._addrs() if len(a) <= MAX_ADDR_LENGTH][:MAX_ADDRS]
        return self._messenger.link_request(name=name, addrs=addrs, wall_now=self._now())

    async def wait_linked(self, timeout: float) -> Linked:  # noqa: ASYNC109 (turned into a typed error)
        """Wait (at most ``timeout`` seconds) for the primary's grant; ``NetworkError`` if none came."""
        with trio.move_on_after(timeout):
            await self._wait_for(lambda: self.linked is not None)
        if self.linked is None:
            raise NetworkError("link", f"no approval from the primary device within {timeout:g} s")
        return self.linked

    # --- the primary ----------------------------------------------------------------------------------

    async def approve(
        self,
        text: str,
        *,
        code: str | None = None,
        primary_name: str = PRIMARY_NAME,
        mailboxes: Sequence[str] = (),
    ) -> LinkApproved:
        """Add the device whose request is ``text`` (see the module docstring). ``code``: the six digits
        the new device shows (``LinkCodeMismatch`` if they differ); ``mailboxes``: the ones this
        person syncs from (multiaddrs ending in ``/p2p/<PeerId>``), put in the root invite the new
        device gets, as in any invite of ours. ``NotPrimary`` on a linked device;
        ``DecodeError``/``Expired``/``BadSignature`` for a bad request; ``DeviceError`` if listed."""
        if not self._book.is_primary:
            raise NotPrimary()
        request = LinkRequest.from_text(text, wall_now=self._now())
        if code is not None and "".join(code.split()) != request.code():
            raise LinkCodeMismatch()
        device_public = PublicIdentity.from_bytes(request.device)
        own = self._book.own_list
        if own is not None and request.device in own.keys():  # noqa: SIM118 (a method, not a dict)
            raise DeviceError(f"device {request.name!r} is already linked")
        snapshot, left_out = encode_snapshot(*self._snapshot_parts(mailboxes))
        self._remember_approved(request)
        for address in request.addrs:  # the grant goes out at once when we are connected
            full = address if "/p2p/" in address else f"{address}/p2p/{device_public.peer_id}"
            with contextlib.suppress(BadAddress, NetworkError):
                await self._connect(full)
                break
        try:
            devices, actions = self._messenger.approve_link(
                request, snapshot=snapshot, wall_now=self._now(), primary_name=primary_name
            )
        except ValueError as exc:  # listed already, or the list is full
            raise DeviceError(str(exc)) from exc
        if len(self._approved_addrs) >= MAX_DEVICES:
            self._approved_addrs.pop(next(iter(self._approved_addrs)))
        self._approved_addrs[request.device] = request.addrs
        grant_id = _first_publish(actions)
        self._store.perform(actions)
        self._store.reach_and_publish(device_public, grant_id)
        lists = self._tell_contacts()
        contacts = len(self._contacts) if self._contacts is not None else 0
        return LinkApproved(
            device=next(d for d in devices.devices if d.key == request.device),
            devices=devices,
            grant=self._handle(grant_id),
            contacts=contacts - left_out,
            left_out=left_out,
            lists=lists,
        )

    def remove(self, device: str | bytes | PublicIdentity) -> DeviceRemoved:
        """Remove one of our devices (by name, PeerId, key or key in hex): nothing sent afterwards by
        us or by a contact that got the new list reaches it. ``NotPrimary``; ``UnknownDevice``;
        ``DeviceError`` for the primary itself."""
        if not self._book.is_primary:
            raise NotPrimary()
        found = self.find(device)
        if found.key == self._book.root:
            raise DeviceError("the primary cannot be removed: it is the person's identity")
        devices, actions = self._messenger.remove_device(found.key, wall_now=self._now())
        self._approved_addrs.pop(found.key, None)
        self._store.perform(actions)
        return DeviceRemoved(device=found, devices=devices, lists=self._tell_contacts())

    def find(self, device: str | bytes | PublicIdentity) -> Device:
        """Our device ``device`` (name, PeerId, key or its hex); ``UnknownDevice`` if none or several."""
        own = self._book.own_list
        candidates = own.devices if own is not None else ()
        if isinstance(device, PublicIdentity):
            device = device.ed25519
        if isinstance(device, bytes):
            found = [d for d in candidates if d.key == device]
        else:
            found = [d for d in candidates if device in {d.public.peer_id, d.key.hex()}]
            found = found or [d for d in candidates if d.name == device]
        if len(found) != 1:
            what = device.hex() if isinstance(device, bytes) else device
            raise UnknownDevice(what, several=len(found) > 1)
        return found[0]

    # --- inside ---------------------------------------------------------------------------------------

    def _tell_contacts(self) -> tuple[MessageHandle, ...]:
        """Send our new list to every contact (each then seals to exactly the devices it names)."""
        handles = []
        for contact in self._contacts or ():
            actions = self._messenger.send_device_list(contact.public, wall_now=self._now())
            self._store.perform(actions)
            if actions:
                first = _first_publish(actions)
                self._store.reach_and_publish(contact.public, first)
                handles.append(self._handle(first))
        return tuple(handles)

    def _remember_approved(self, request: LinkRequest) -> None:
        """Refuse a request approved before (``DeviceError``); else remember it, durably, first."""
        now = int(self._now())
        approved = {n: until for n, until in self._read_approved().items() if until >= now}
        nonce = request.nonce.hex()
        if nonce in approved:
            raise DeviceError(
                "this link request was approved already; make a new one on the new device to link it again"
            )
        approved[nonce] = request.created + LINK_REQUEST_TTL + LINK_CLOCK_SKEW
        while len(approved) > MAX_APPROVED:
            del approved[min(approved, key=approved.__getitem__)]
        self._approved = approved
        self._write_file(APPROVED_FILE, json.dumps({"approved": approved}, indent=2) + "\n")

    def _read_approved(self) -> dict[str, int]:
        if self._profile is None:
            return dict(self._approved)
        path = self._profile / APPROVED_FILE
        try:
            with path.open("rb") as file:
                value = json.loads(file.read(MAX_APPROVED * 128 + 1024))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ProfileError(f"cannot read {path}: {exc}") from exc
        entries = value.get("approved") if isinstance(value, dict) else None
        if not isinstance(entries, dict):
            raise ProfileError(f'{path} must be a JSON object with an "approved" map')
        return {k: v for k, v in entries.items() if isinstance(k, str) and type(v) is int}

    def _handle(self, message_id: bytes) -> MessageHandle:
        record = self._messenger.status(message_id)
        assert record is not None, "the store layer queued it"
        return MessageHandle(record, messenger=self._messenger, wait_for=self._wait_for)

    def _snapshot_parts(self, mailboxes: Sequence[str]) -> tuple[str, str, builtins.list[tuple[str, str]]]:
        name = self._profile_name()
        bundle = self._messenger.bundle(wall_now=self._now()).encode()
        # Where this node listens; a node listening nowhere (a one-shot command) gives the addresses
        # the profile's long-running node recorded, as ``meshchat invite`` does.
        addrs = [a for a in self._addrs() or self._recorded if len(a) <= MAX_ADDR_LENGTH][:MAX_ADDRS]
        try:
            invite = Invite.create(
                self._identity, name=name, addrs=addrs, mailboxes=tuple(mailboxes), bundle=bundle
            ).to_text()
        except BadInvite as exc:
            raise DeviceError(f"cannot make this profile's invite for the new device: {exc}") from exc
        contacts = [(c.name, c.invite.to_text()) for c in self._contacts or ()]
        return name, invite, contacts

    def _profile_name(self) -> str:
        if self._profile is None:
            return ""
        try:
            value = json.loads((self._profile / PROFILE_NAME_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        name = value.get("name") if isinstance(value, dict) else None
        return name if isinstance(name, str) else ""

    def _read_recorded(self) -> builtins.list[str]:
        if self._profile is None:
            return []
        try:
            with (self._profile / ADDRESSES_FILE).open("rb") as file:
                value = json.loads(file.read(_MAX_ADDRESSES_FILE))
        except (OSError, ValueError):  # none recorded, or unreadable: the invite goes without
            return []
        addrs = value.get("addrs") if isinstance(value, dict) else None
        if not isinstance(addrs, list):
            return []
        return [a for a in addrs if isinstance(a, str) and a.startswith("/")]

    def _read_root_invite(self) -> Invite | None:
        if self._profile is None:
            return None
        path = self._profile / ROOT_INVITE_FILE
        try:
            with path.open("rb") as file:
                text = file.read(_MAX_INVITE_FILE).decode("utf-8")
            invite = Invite.from_text(text)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, MeshchatError) as exc:
            raise ProfileError(f"{path} does not hold a valid invite: {exc}") from exc
        return invite if invite.public.ed25519 == self._book.root else None

    def _write_file(self, name: str, text: str) -> None:
        if self._profile is None:
            return
        path = self._profile / name
        try:
            replace_atomically(path, text.encode("utf-8"))
        except OSError as exc:
            raise ProfileError(f"cannot write {path}: {exc.strerror or exc}") from exc

    async def _reach_root(self) -> None:
        invite = self.root_invite
        if invite is not None:
            await self._reach(
                Whereabouts(peer_id=invite.public.peer_id, addrs=invite.addrs, mailboxes=invite.mailboxes)
            )


def _first_publish(actions: Sequence[Action]) -> bytes:
    """The id of the first message ``actions`` publish (the one a store-layer call queued first)."""
    for action in actions:
        if isinstance(action, PublishEnvelope) and action.message_id is not None:
            return action.message_id
    raise AssertionError("the store layer queued a message and publishes it")
