"""Whose devices are whose: this person's signed device list and the lists of the people we talk to.
Sans-IO, in the ``Messenger``'s storage.

A person is a root identity (the key of their invite; the safety number is computed from it). Each of
their devices has its own key (``meshchat.identity.devices``); the primary device's key is the root
key, so a person who never linked a device has no list and is exactly one device. ``DeviceBook``
answers the messenger's two questions: which device keys a message to a person goes to
(``targets``: every device of their newest known list, or the root key alone), and whose device a
sender's key is (``owner_of``). A list is learnt from a message of one of the devices it names (a
``DeviceUpdate``, or the list a linked device attaches to its first messages) and replaces the one
known only with a higher version, signed by the same root; a list naming the receiver's own root is
one of our own (the primary telling the others).

A root's signature says which keys it sends to, not that those keys agreed: anyone can sign a list
naming someone else's key. So a device key is taken as a person's device (``owner_of``) only once the
device itself brought a list of that person naming it (its seal proves the key), and only while the
newest list still names it: a stranger's list naming a contact's key gets that stranger nothing but
copies of its own messages sent to that key, and a removed device is nobody's device again at
once. A linked device therefore attaches its list to its messages to a peer until it has sent that
peer the current version once (``announcement``; with the message's retries, it arrives).

Lists are written as state records (``b"dv:p:" + root``; our own under ``b"dv:own"``, a linked
device's root under ``b"dv:root"``; vouching devices ``b"dv:v:"``, announcements ``b"dv:a:"``) in the
transaction of the message that carried them, as ``SessionKeeper`` does with ratchets.

Bounds: ``MAX_PEOPLE`` lists kept (any stranger who writes to us can make us learn one; each is at
most ``MAX_DEVICE_LIST_SIZE`` bytes), and at most ``MAX_DEVICES`` times as many vouching devices.
"""

from __future__ import annotations

from meshchat.errors import BadSignature, DecodeError
from meshchat.identity import Identity
from meshchat.identity.devices import MAX_DEVICES, Device, DeviceList
from meshchat.store.storage import StateWrite, Storage

__all__ = ["MAX_PEOPLE", "DeviceBook", "Learnt"]

#: People whose device lists are kept: about the contacts of a very social person, with room for strangers.
MAX_PEOPLE = 20_000
_OWN = b"dv:own"
_ROOT = b"dv:root"
_PENDING = b"dv:pending"
_PEOPLE = b"dv:p:"
_VOUCHED = b"dv:v:"
_ANNOUNCED = b"dv:a:"

#: What learning a list changed: ``(list, added, removed, own)``.
Learnt = tuple[DeviceList, tuple[Device, ...], tuple[Device, ...], bool]


class DeviceBook:
    """See the module docstring."""

    def __init__(self, identity: Identity, storage: Storage) -> None:
        """Read this profile's lists (``StorageError`` if they cannot be read; ``DecodeError`` if damaged)."""
        self._identity = identity
        self._storage = storage
        root = storage.state_get(_ROOT)
        self.root: bytes = root if root is not None else identity.public.ed25519
        own = storage.state_get(_OWN)
        self.own_list: DeviceList | None = None if own is None else DeviceList.decode(own)
        self._lists: dict[bytes, DeviceList] = {}
        for _, value in storage.state_prefix(_PEOPLE):
            self._remember(DeviceList.decode(value))
        # Devices that vouched for their person (brought a list naming themselves): device -> root.
        self._vouched: dict[bytes, bytes] = {
            key[len(_VOUCHED) :]: value for key, value in storage.state_prefix(_VOUCHED)
        }
        self._writes: list[StateWrite] = []
        # The list version last sent to each peer device (loaded on first use; bounded by the peers
        # this device sends to, like its session records).
        self._announced: dict[bytes, bytes] = {}
        # (own?, root, the list it replaced) per change since the last commit, to undo a failed write.
        self._undo: list[tuple[bool, bytes, DeviceList | None]] = []

    @property
    def is_primary(self) -> bool:
        """Whether this device holds the root key (it alone signs device lists)."""
        return self.root == self._identity.public.ed25519

    def list_of(self, root: bytes) -> DeviceList | None:
        """``root``'s newest known device list (our own for our root)."""
        return self.own_list if root == self.root else self._lists.get(root)

    def targets(self, root: bytes) -> list[bytes]:
        """The device keys a message to person ``root`` goes to: every device of their list (the root's
        first), or the root key alone when no list is known."""
        devices = self.list_of(root)
        if devices is None:
            return [root]
        return [d.key for d in devices.devices]

    def own_others(self) -> list[bytes]:
        """Our other devices' keys (they get a copy of what this one sends)."""
        if self.own_list is None:
            return []
        me = self._identity.public.ed25519
        return [d.key for d in self.own_list.devices if d.key != me]

    def owner_of(self, device: bytes) -> bytes:
        """The root key of the person whose device ``device`` is (itself when no list names it)."""
        own = self.own_list.keys() if self.own_list is not None else frozenset()
        if device in own:
            return self.root
        root = self._vouched.get(device)
        if root is None:
            return device
        devices = self._lists.get(root)
        named = devices.keys() if devices is not None else frozenset()
        return root if device in named else device

    def announcement(self, peer: bytes) -> bytes:
        """The encoded list to attach to a message to device ``peer`` (b"": none needed): a linked
        device's, until it sent that peer its current version (recorded in ``writes``)."""
        own = self.own_list
        if own is None or self.is_primary:
            return b""
        version = own.version.to_bytes(8, "big")
        if self._announced.get(peer) == version:
            return b""
        if peer not in self._announced:
            self._announced[peer] = self._storage.state_get(_ANNOUNCED + peer) or b""
            if self._announced[peer] == version:
                return b""
        self._announced[peer] = version
        self._writes.append((_ANNOUNCED + peer, version))
        self._undo.append((False, b"announced:" + peer, None))
        return own.encode()

    def learn(self, data: bytes, *, sender: bytes) -> Learnt | None:
        """Take the device list ``data`` that device ``sender`` sent; what changed, or None (not newer).

        ``DecodeError``/``BadSignature`` if it is not a valid list, or does not name ``sender`` (a list
        vouches only for the device that brings it, or comes from its primary)."""
        devices = DeviceList.decode(data)
        named = devices.keys()
        if sender not in named and sender != devices.root:
            raise DecodeError("device list", "the sender is not one of its devices")
        own = devices.root == self.root
        older = self.own_list if own else self._lists.get(devices.root)
        if (
            not own
            and sender in named
            and sender != devices.root
            and self._vouched.get(sender) != devices.root
            and len(self._vouched) < MAX_PEOPLE * MAX_DEVICES
        ):
            self._vouched[sender] = devices.root
            self._writes.append((_VOUCHED + sender, devices.root))
            self._undo.append((False, b"vouched:" + sender, None))
        if not devices.replaces(older):
            return None
        if not own and older is None and len(self._lists) >= MAX_PEOPLE:
            return None
        # (A list of our own that no longer names this device: we were removed. It is kept, so this
        # device copies nothing to the others any more.)
        self._undo.append((own, devices.root, older))
        self._adopt(devices, own=own)
        added, removed = devices.diff(older) if older is not None else (devices.devices, ())
        return devices, added, removed, own

    def adopt_own(self, devices: DeviceList) -> None:
        """Make ``devices`` our own list (the primary after a link or removal; a new device's grant)."""
        if devices.root != self.root:
            raise BadSignature("device list of another person")
        self._undo.append((True, devices.root, self.own_list))
        self._adopt(devices, own=True)

    def become_linked(self, devices: DeviceList) -> None:
        """This (new) device joins ``devices``'s person: their root becomes ours."""
        self._undo.append((True, self.root, self.own_list))
        self.root = devices.root
        self._writes.append((_ROOT, devices.root))
        self._adopt(devices, own=True)

    def _adopt(self, devices: DeviceList, *, own: bool) -> None:
        if own:
            self.own_list = devices
            self._writes.append((_OWN, devices.encode()))
        else:
            self._remember(devices)
            self._writes.append((_PEOPLE + devices.root, devices.encode()))

    def _remember(self, devices: DeviceList) -> None:
        self._lists[devices.root] = devices

    # --- pending link request (the new device) ------------------------------------------------------

    def pending_link(self) -> bytes | None:
        """The nonce of the link request this device showed and waits to be granted, if any."""
        return self._storage.state_get(_PENDING)

    def pending_write(self, nonce: bytes | None) -> StateWrite:
        """The write that records (or, with None, clears) the pending link request."""
        return (_PENDING, nonce)

    # --- transactions -------------------------------------------------------------------------------

    def writes(self) -> list[StateWrite]:
        """The state writes of everything learnt since the last commit."""
        return list(self._writes)

    def committed(self) -> None:
        """The writes are on disk."""
        self._writes.clear()
        self._undo.clear()

    def rolled_back(self) -> None:
        """The writes failed: forget what was learnt since the last commit."""
        for own, root, older in reversed(self._undo):
            if own:
                self.own_list = older
            elif root.startswith(b"vouched:"):
                self._vouched.pop(root[len(b"vouched:") :], None)
            elif root.startswith(b"announced:"):
                self._announced.pop(root[len(b"announced:") :], None)
            elif older is None:
                self._lists.pop(root, None)
            else:
                self._remember(older)
        stored_root = self._storage.state_get(_ROOT)
        self.root = stored_root if stored_root is not None else self._identity.public.ed25519
        self._writes.clear()
        self._undo.clear()
