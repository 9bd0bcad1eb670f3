"""One group's keys as one member holds them: its own sending chain, the other members' chains.

``GroupKeys`` is the bookkeeping half of ``meshchat.groups.core``; it does no crypto of its own
(``meshchat.groups.chains`` and ``meshchat.groups.seal`` do) and no storage (the core persists what it
returns). What it decides:

* **When our chain is replaced** (``needs_new_chain``): when we have none; when a member it was
  handed to is no longer a member (a removal or a leave: the one who went must read nothing we send
  from now on); when it is ``ROTATE_SECONDS`` old or has sent ``ROTATE_MESSAGES`` messages (post-
  compromise security: a key stolen once stops working). A new chain is handed to every current
  member; a member added later gets the current chain (from its current position: nothing sent before
  it joined).
* **Which chains we accept**: a member's handout of a generation we do not hold yet, in any order
  (handouts travel one by one on the 1:1 path: when a member's chains change fast, as in a group
  with churn, a newer one can arrive first, and the older one still opens the messages, and the
  operations, sent on it); at most ``CHAINS_PER_SENDER`` per member (the newest), so messages still
  in flight on earlier chains open. A member's chains are dropped when the member
  goes, their ids kept in ``retired`` (bounded) so that a late message on them is counted as from a
  removed member rather than kept waiting.
* **Messages waiting for a chain**: a message can arrive before its sender's handout (both travel
  independently). Up to ``MAX_WAITING`` per group wait; the oldest is dropped (counted) beyond that.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from meshchat.groups.chains import ReceiverChain, SenderChain

__all__ = [
    "CHAINS_PER_SENDER",
    "MAX_RETIRED",
    "MAX_WAITING",
    "ROTATE_MESSAGES",
    "ROTATE_SECONDS",
    "GroupKeys",
    "Waiting",
]

#: Age at which our sending chain is replaced: a week (post-compromise security: a stolen chain key
#: reads at most a week of our messages).
ROTATE_SECONDS = 7 * 24 * 3600
#: Messages after which our sending chain is replaced.
ROTATE_MESSAGES = 10_000
#: Chains kept per other member: the current one and the ones before it (messages in flight; a
#: member replaces its chain after each departure, so in a busy group several follow quickly).
CHAINS_PER_SENDER = 4
#: Retired chain ids remembered per group (each 16 bytes): a message on one is a removed member's.
MAX_RETIRED = 4096
#: Messages per group waiting for their sender's chain.
MAX_WAITING = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting:
    """A group envelope that arrived before its chain."""

    #: Its id.
    message_id: bytes
    #: The envelope.
    data: bytes
    #: The chain it needs.
    chain_id: bytes


class GroupKeys:
    """See the module docstring."""

    def __init__(
        self, *, chain: SenderChain | None, generation: int, chain_members: frozenset[bytes]
    ) -> None:
        """Start from what was stored."""
        #: Our current sending chain (None: a new one at the next send).
        self.chain = chain
        #: Our chain's number in this group.
        self.generation = generation
        #: Members our current chain was handed to.
        self.chain_members = chain_members
        #: Other members' chains by chain id.
        self.receivers: dict[bytes, ReceiverChain] = {}
        self._by_sender: dict[bytes, list[tuple[int, bytes]]] = {}
        self.retired: OrderedDict[bytes, None] = OrderedDict()
        self.waiting: OrderedDict[bytes, Waiting] = OrderedDict()
        #: Waiting messages dropped because ``MAX_WAITING`` were already waiting.
        self.waiting_dropped = 0

    # --- our chain ---------------------------------------------------------------------------------

    def needs_new_chain(self, members: frozenset[bytes], *, wall_now: float) -> bool:
        """True if our next message needs a new chain (see the module docstring)."""
        chain = self.chain
        if chain is None:
            return True
        if not self.chain_members <= members:  # (a subset test allocates nothing)
            return True
        return chain.created_at + ROTATE_SECONDS <= wall_now or chain.iteration >= ROTATE_MESSAGES

    def drop_chain(self) -> None:
        """Forget our chain (a member went, or we left): the next send starts a new one."""
        self.chain = None
        self.chain_members = frozenset()

    def new_chain(self, chain: SenderChain, members: frozenset[bytes]) -> None:
        """Use ``chain`` from now on, handed to ``members``."""
        self.chain = chain
        self.generation += 1
        self.chain_members = members

    # --- theirs ------------------------------------------------------------------------------------

    def generation_held(self, sender: bytes, generation: int) -> bool:
        """True if we hold ``sender``'s chain of ``generation``, or it is older than every one of the
        ``CHAINS_PER_SENDER`` we hold (it would be dropped at once)."""
        held = self._by_sender.get(sender, [])
        if any(g == generation for g, _ in held):
            return True
        return len(held) >= CHAINS_PER_SENDER and generation < held[0][0]

    def newest_generation(self, sender: bytes) -> int:
        """The highest generation of ``sender``'s chains we hold (0: none)."""
        held = self._by_sender.get(sender)
        return held[-1][0] if held else 0

    def add_receiver(self, chain: ReceiverChain, generation: int) -> list[bytes]:
        """Hold ``chain`` (generation checked by the caller); return the chain ids it pushed out."""
        held = self._by_sender.setdefault(chain.sender, [])
        held.append((generation, chain.chain_id))
        held.sort()
        self.receivers[chain.chain_id] = chain
        dropped: list[bytes] = []
        while len(held) > CHAINS_PER_SENDER:
            _, old = held.pop(0)
            self.receivers.pop(old, None)
            self._retire(old)
            dropped.append(old)
        return dropped

    def generation_of(self, sender: bytes, chain_id: bytes) -> int:
        """The generation of ``sender``'s chain ``chain_id`` (0 if not held)."""
        for generation, held in self._by_sender.get(sender, []):
            if held == chain_id:
                return generation
        return 0

    def load_receiver(self, chain: ReceiverChain, generation: int) -> None:
        """Hold a stored chain (at start)."""
        held = self._by_sender.setdefault(chain.sender, [])
        held.append((generation, chain.chain_id))
        held.sort()
        self.receivers[chain.chain_id] = chain

    def drop_sender(self, sender: bytes) -> list[bytes]:
        """Forget every chain of ``sender`` (it left or was removed); return their ids."""
        gone = [chain_id for _, chain_id in self._by_sender.pop(sender, [])]
        for chain_id in gone:
            self.receivers.pop(chain_id, None)
            self._retire(chain_id)
        return gone

    def senders(self) -> set[bytes]:
        """Members we hold a chain of."""
        return set(self._by_sender)

    def _retire(self, chain_id: bytes) -> None:
        self.retired[chain_id] = None
        while len(self.retired) > MAX_RETIRED:
            self.retired.popitem(last=False)

    # --- messages waiting for a chain --------------------------------------------------------------

    def wait(self, item: Waiting) -> None:
        """Keep ``item`` until its chain arrives (the oldest is dropped past ``MAX_WAITING``)."""
        self.waiting[item.message_id] = item
        while len(self.waiting) > MAX_WAITING:
            self.waiting.popitem(last=False)
            self.waiting_dropped += 1

    def take_waiting(self, chain_id: bytes) -> list[Waiting]:
        """The waiting messages for ``chain_id`` (removed from the wait)."""
        found = [w for w in self.waiting.values() if w.chain_id == chain_id]
        for item in found:
            del self.waiting[item.message_id]
        return found
