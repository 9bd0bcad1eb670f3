"""``node.groups``: the application's side of groups (create, invite, join, send, read).

```python
family = node.groups.create("Family", ["alice", "bob"])     # contacts by name, PeerId or key
node.groups.send(family.group_id, "dinner at 8")           # one envelope for the whole group
async for event in node.events():                          # GroupMessage, GroupChanged, GroupStatus,
    ...                                                     # GroupInvited
```

A thin facade over ``meshchat.groups.core.GroupsCore`` and its driver (``meshchat.net.group_driver``):
it resolves names to keys and hands the core's actions to the driver. A group is named by its id
(bytes), its id in hex (or a prefix of it), or its name. Nothing here blocks: every call returns
once its change is durable in ``groups.db``; the network work follows in the background.

Group messages reach the application as ``GroupMessage`` events (live, queued like the node's other
notices) and always in ``history(group, after=N)``, numbered in the order they were accepted; an
application resumes from the last ``number`` it handled, so a message is never handled twice, even
across a crash (the number is given once, in the transaction that accepts the message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshchat.contacts import Contact, Contacts
from meshchat.errors import DecodeError, UnknownPeer
from meshchat.groups.core import GroupsCore, GroupView
from meshchat.groups.events import GroupEvent, GroupMessage, GroupStatus, MemberStatus
from meshchat.groups.storage import GroupMessageRecord, GroupOutRecord, GroupStorage, MemoryGroupStorage
from meshchat.identity import Identity, PublicIdentity
from meshchat.net.driver import GossipDriver
from meshchat.net.group_driver import GroupDriver
from meshchat.net.store_driver import StoreDriver
from meshchat.store.messenger import Messenger

__all__ = ["Groups", "Member"]

#: Who a call may name as a member: a contact, a public key, or a contact's name or PeerId.
Member = Contact | PublicIdentity | str


class Groups:
    """See the module docstring."""

    def __init__(self, driver: GroupDriver, contacts: Contacts | None) -> None:
        """Used by ``Node``; applications use ``node.groups``."""
        #: The groups core's driver (the node runs it).
        self.driver = driver
        self._driver = driver
        self._core: GroupsCore = driver.core
        self._contacts = contacts

    @classmethod
    def build(
        cls,
        identity: Identity,
        storage: GroupStorage | None,
        *,
        messenger: Messenger,
        store: StoreDriver,
        gossip: GossipDriver,
        wall_clock: Callable[[], float],
        on_event: Callable[[GroupEvent], None],
        reach: Callable[[PublicIdentity, bytes], None],
        contacts: Contacts | None,
    ) -> Groups:
        """The groups of ``identity`` kept in ``storage`` (in memory if None), on a node's drivers."""
        core = GroupsCore(
            identity, storage if storage is not None else MemoryGroupStorage(), wall_now=wall_clock()
        )
        driver = GroupDriver(
            core,
            messenger=messenger,
            store=store,
            gossip=gossip,
            wall_clock=wall_clock,
            on_event=on_event,
            reach=reach,
        )
        return cls(driver, contacts)

    # --- changing groups ---------------------------------------------------------------------------------

    def create(self, name: str, members: Sequence[Member] = (), *, admins_only: bool = False) -> GroupView:
        """Create group ``name`` with us as its admin and ``members`` invited (each accepts with
        ``join`` on its node); ``admins_only``: an announcements group, where only admins post
        (members' ``send`` raises ``NotAuthorized``, and their messages are dropped by everyone).
        ``GroupFull`` beyond ``MAX_GROUP_MEMBERS`` or ``MAX_GROUPS``."""
        keys = [self._public(m) for m in members]
        group_id, actions = self._core.create(name, keys, wall_now=self._now(), admins_only=admins_only)
        self._driver.perform(actions)
        return self._core.view(group_id)

    def invite(self, group: bytes | str, member: Member) -> None:
        """Add ``member`` to ``group`` (admins only: ``NotAuthorized``); it gets an invitation."""
        self._driver.perform(self._core.invite(self.id_of(group), self._public(member), wall_now=self._now()))

    def join(self, group: bytes | str) -> GroupView:
        """Accept the invitation to ``group``: its messages come from now on."""
        group_id = self.id_of(group)
        self._driver.perform(self._core.join(group_id, wall_now=self._now()))
        return self._core.view(group_id)

    def leave(self, group: bytes | str) -> None:
        """Leave ``group``: the others are told; we read nothing sent after."""
        self._driver.perform(self._core.leave(self.id_of(group), wall_now=self._now()))

    def remove(self, group: bytes | str, member: Member) -> None:
        """Remove ``member`` (admins only): it reads nothing sent after."""
        self._driver.perform(
            self._core.remove(self.id_of(group), self._public(member).ed25519, wall_now=self._now())
        )

    def promote(self, group: bytes | str, member: Member) -> None:
        """Make ``member`` an admin (admins only)."""
        self._driver.perform(
            self._core.promote(self.id_of(group), self._public(member).ed25519, wall_now=self._now())
        )

    def demote(self, group: bytes | str, member: Member) -> None:
        """Take ``member``'s admin role (admins only)."""
        self._driver.perform(
            self._core.demote(self.id_of(group), self._public(member).ed25519, wall_now=self._now())
        )

    def rename(self, group: bytes | str, name: str) -> None:
        """Rename ``group`` (admins only)."""
        self._driver.perform(self._core.rename(self.id_of(group), name, wall_now=self._now()))

    # --- messages ----------------------------------------------------------------------------------------

    def send(self, group: bytes | str, body: bytes | str, *, ref: str = "") -> GroupOutRecord:
        """Send ``body`` to ``group``: one envelope for every member, on the group's topic and its
        mailboxes. ``ref``: an idempotency key (sending again with it returns the first message).
        ``status(message_id)`` and ``GroupStatus`` events say where it is."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        record, actions = self._core.send(self.id_of(group), data, ref=ref, wall_now=self._now())
        self._driver.perform(actions)
        return record

    def mark_read(self, message: GroupMessage) -> None:
        """Tell ``message``'s sender we read it (batched with other receipts)."""
        self._core.mark_read(message.group_id, message.sender, [message.message_id], wall_now=self._now())
        self._driver.perform([])

    def history(self, group: bytes | str, *, after: int = 0, limit: int = 100) -> list[GroupMessageRecord]:
        """``group``'s messages (ours included) numbered after ``after``, oldest first."""
        return self._core.history(self.id_of(group), after=after, limit=limit)

    def status(self, message_id: bytes) -> GroupStatus | None:
        """Where our group message is: stored, delivered to N of M, read by K."""
        return self._core.status(message_id)

    # --- reading groups ----------------------------------------------------------------------------------

    def all(self) -> list[GroupView]:
        """Every group we know (joined, invited, left or removed), by name."""
        return self._core.groups()

    def invitations(self) -> list[GroupView]:
        """Groups that invited us and that we have not joined yet."""
        return [g for g in self._core.groups() if g.status is MemberStatus.INVITED]

    def members(self, group: bytes | str) -> GroupView:
        """``group``'s name, our status, members and admins."""
        return self._core.view(self.id_of(group))

    def id_of(self, group: bytes | str) -> bytes:
        """The id of ``group`` (bytes as they are; a name or hex id or prefix looked up)."""
        if isinstance(group, bytes):
            self._core.view(group)  # UnknownGroup if we do not know it
            return group
        return self._core.find(group)

    def statistics(self) -> dict[str, int]:
        """The groups core's counters (accepted, sent, discards by reason)."""
        return self._core.statistics()

    # --- internals ---------------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._driver.now()

    def _public(self, member: Member) -> PublicIdentity:
        if isinstance(member, Contact):
            return member.public
        if isinstance(member, PublicIdentity):
            return member
        if self._contacts is not None:
            try:
                return self._contacts.find(member).public
            except UnknownPeer:
                pass
        try:
            return PublicIdentity.from_peer_id(member)
        except DecodeError as exc:
            raise UnknownPeer(member) from exc
