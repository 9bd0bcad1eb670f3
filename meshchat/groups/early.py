"""What arrives before what it needs: invitation parts before the first one, chain handouts before the
op that makes their sender a member (or before the invitation itself).

Control messages travel one by one on the sealed 1:1 path, and a mailbox hands them back in id order,
not in the order they were sent; each is acknowledged as soon as the groups core took it, so nobody
sends it again. ``EarlyArrivals`` keeps them until they can be used, within bounds a hostile contact
cannot stretch (any contact can send them):

* invitation parts of groups we do not know: ``MAX_ORPHANS`` groups and ``MAX_ORPHAN_BYTES`` in all
  (the oldest group dropped first, counted), in memory only: a crash while an invitation of several
  parts (an op set of more than 48 ops) is incomplete loses the parts already here, and the admin
  must invite again;
* chain handouts: ``MAX_ORPHAN_CHAINS``, kept in storage (``ChainRecord`` rows), so they survive a
  crash, and adopted by the group's session once their sender is a member.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence

from meshchat.errors import DecodeError
from meshchat.groups.chains import ReceiverChain, decode_handout
from meshchat.groups.events import GroupAction
from meshchat.groups.payload import ChainControl
from meshchat.groups.session import GroupSession
from meshchat.groups.storage import ChainRecord, GroupWrite
from meshchat.identity import KeyCache

__all__ = ["MAX_ORPHANS", "MAX_ORPHAN_BYTES", "MAX_ORPHAN_CHAINS", "EarlyArrivals"]

#: Groups whose invitation is still incomplete (parts that overtook the first, or the first parts
#: before the one that adds us), kept per user.
MAX_ORPHANS = 16
#: Bytes of such parts kept in all: a 1,000-member group's op set twice over.
MAX_ORPHAN_BYTES = 256 * 1024
#: Chain handouts kept (in storage too) until the ops that make their sender a member, or invite us,
#: arrive.
MAX_ORPHAN_CHAINS = 1_024


class EarlyArrivals:
    """See the module docstring."""

    def __init__(self, counts: Counter[str], keys: KeyCache) -> None:
        """Empty; ``counts`` is the core's counter, ``keys`` its cache of checked keys."""
        self._counts = counts
        self._keys = keys
        self._parts: OrderedDict[bytes, list[tuple[bytes, ...]]] = OrderedDict()
        self._part_bytes = 0
        self.chains: OrderedDict[bytes, ChainRecord] = OrderedDict()

    def clear(self) -> None:
        """Forget everything (the core reloads from storage)."""
        self._parts.clear()
        self._part_bytes = 0
        self.chains.clear()

    # --- invitation parts --------------------------------------------------------------------------------

    def add_part(self, group_id: bytes, ops: tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
        """Keep one part of ``group_id``'s invitation; return every part kept for it (none if the
        bounds just dropped it)."""
        parts = self._parts.setdefault(group_id, [])
        parts.append(ops)
        self._parts.move_to_end(group_id)
        self._part_bytes += sum(map(len, ops))
        while len(self._parts) > MAX_ORPHANS or self._part_bytes > MAX_ORPHAN_BYTES:
            _, dropped = self._parts.popitem(last=False)
            self._part_bytes -= _size(dropped)
            self._counts["orphans_dropped"] += 1
        return list(self._parts.get(group_id, ()))

    def take_parts(self, group_id: bytes) -> None:
        """The invitation is complete: forget its parts."""
        self._part_bytes -= _size(self._parts.pop(group_id, []))

    # --- chain handouts ----------------------------------------------------------------------------------

    def keep_chain(self, record: ChainRecord, write: GroupWrite) -> None:
        """Keep a handout whose sender we cannot place yet (stored through ``write``)."""
        self.chains[record.chain_id] = record
        write.chains.append(record)
        self._counts["chain_kept"] += 1
        while len(self.chains) > MAX_ORPHAN_CHAINS:
            write.drop_chains.append(self.chains.popitem(last=False)[0])
            self._counts["orphan_chains_dropped"] += 1

    def chain_control(
        self,
        control: ChainControl,
        sender: bytes,
        groups: Mapping[bytes, GroupSession],
        write: GroupWrite,
        wall_now: float,
    ) -> list[GroupAction]:
        """A chain handout from ``sender``: to its group's session if the sender is a member there;
        kept (durably) if the invitation or the op adding the sender has not arrived yet."""
        try:
            handout = decode_handout(control.handout, key_cache=self._keys)
            chain = ReceiverChain.from_handout(handout, sender, key_cache=self._keys)
        except DecodeError:
            self._counts["chain_malformed"] += 1
            return []
        if self._chain_id_known(chain.chain_id, groups):  # chain ids key the storage: never replace
            self._counts["chain_replayed"] += 1
            return []
        group = groups.get(control.group_id)
        if group is not None and sender in group.state().members:
            return group.take_chain(control, sender, write, wall_now)
        if group is not None and sender in group.state().removed:
            self._counts["chain_from_non_member"] += 1
            return []
        record = ChainRecord(
            chain_id=chain.chain_id,
            group_id=control.group_id,
            sender=sender,
            generation=control.generation,
            state=chain.to_bytes(),
        )
        self.keep_chain(record, write)
        return []

    def adopt(
        self, groups: Mapping[bytes, GroupSession], write: GroupWrite, wall_now: float
    ) -> list[GroupAction]:
        """Hand the kept handouts whose sender is now a member of a group we know to its session
        (and drop those whose sender was removed)."""
        actions: list[GroupAction] = []
        for chain_id, record in list(self.chains.items()):
            group = groups.get(record.group_id)
            if group is None:
                continue
            state = group.state()
            if record.sender in state.removed:
                del self.chains[chain_id]
                write.drop_chains.append(chain_id)
            elif record.sender in state.members:
                del self.chains[chain_id]
                chain = ReceiverChain.from_bytes(record.state, key_cache=self._keys)
                actions += group.adopt_chain(chain, record.generation, write, wall_now)
        return actions

    def _chain_id_known(self, chain_id: bytes, groups: Mapping[bytes, GroupSession]) -> bool:
        if chain_id in self.chains:
            return True
        return any(chain_id in g.keys.receivers or chain_id in g.keys.retired for g in groups.values())


def _size(parts: Sequence[tuple[bytes, ...]]) -> int:
    return sum(len(op) for part in parts for op in part)
