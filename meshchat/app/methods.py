"""The JSON-RPC methods over one running ``Node``: the table, and the event hub it starts.

```python
async with Node.open(profile) as node, open_methods(node) as methods:
    ...  # hand ``methods`` to transports: jsonrpc.open_session(methods, notify)
```

Every method is one row of ``METHODS`` (``meshchat.app.params.Method``): its name, typed parameters,
docstring, an example request and result (docs/daemon.md is checked against them), and its handler,
a few lines over the library: no logic the library lacks. ``node.*``, ``contacts.*``, ``messages.*``
and ``events.*`` are here; ``groups.*`` and ``files.*`` in ``meshchat.app.methods_more``,
``credentials.*`` and ``documents.*`` in ``meshchat.app.methods_signing``. Contacts are named by
name or PeerId, ids are lowercase hex.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from meshchat.app.events import EventHub
from meshchat.app.methods_more import MORE_METHODS
from meshchat.app.params import Call, Example, Json, Kind, Method, Param
from meshchat.app.views import contact_json, entry_message, inbox_message, message_json, outbox_entry
from meshchat.errors import DecodeError, StorageError
from meshchat.history import key_of
from meshchat.identity import PublicIdentity, safety_number
from meshchat.wire import Invite

if TYPE_CHECKING:
    from meshchat.node import Node

__all__ = ["CONVERSATION_PAGE", "MAX_PAGE", "METHODS", "Methods", "open_methods"]

#: Messages one ``messages.conversation`` call returns unless it asks for fewer or more.
CONVERSATION_PAGE = 100
#: Most pixels of a QR photo ``contacts.add_qr`` decodes (a 12-megapixel phone photo fits; a
#: decompression bomb does not).
MAX_QR_PIXELS = 16_000_000
#: Largest QR photo accepted, bytes (what fits a message of ``jsonrpc.MAX_MESSAGE`` once base64).
MAX_QR_IMAGE = 700 * 1024
#: Most messages one call returns (a page of a conversation, the inbox, the outbox): a client pages on.
MAX_PAGE = 500

_PEER = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
_MID = "5b0e1f3c9a7d2e4b6c8a0f1e3d5c7b9a2e4f6a8c0b2d4e6f8a1c3e5b7d9f0a2c"
_MESSAGE = {
    "id": _MID,
    "cursor": 12,
    "outgoing": True,
    "peer": _PEER,
    "text": "hello",
    "sent_at_ms": 1764921600000,
    "status": "queued",
    "number": 0,
}
_CONTACT = {
    "peer_id": _PEER,
    "name": "Bob",
    "claimed_name": "Bob",
    "petname": None,
    "verification": "unverified",
    "blocked": False,
    "fingerprint": "12345 67890 12345 67890 12345 67890",
}

_CONTACT_PARAM = Param(name="contact", kind=Kind.STRING, doc="A contact's name or PeerId.")


class Methods:
    """The JSON-RPC methods over one running Node."""

    def __init__(self, node: Node) -> None:
        """The table over ``node``; ``open_methods`` also runs its event hub (use that)."""
        self.node = node
        #: The event hub: the only reader of ``node.events()`` while the methods are open.
        self.hub = EventHub(node, cursor_of=lambda message_id: cursor_of(node, message_id))
        #: Every method by name.
        self.table: dict[str, Method] = {m.name: m for m in METHODS}
        #: Their names, in table order.
        self.names: tuple[str, ...] = tuple(self.table)


@asynccontextmanager
async def open_methods(node: Node) -> AsyncIterator[Methods]:
    """The methods over ``node``, with the event hub running (the only reader of ``node.events()``:
    open one per node) until the block ends."""
    methods = Methods(node)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(methods.hub.run)
        try:
            yield methods
        finally:
            nursery.cancel_scope.cancel()


def cursor_of(node: Node, message_id: bytes) -> int | None:
    """``message_id``'s cursor in the conversation history (None if it has none, or the store fails:
    the message itself is still shown)."""
    try:
        # the node's storage: Node exposes the history by conversation, not by message id
        record = node._messenger.storage.history_get(message_id)
    except StorageError:
        return None
    return None if record is None else record.cursor


# --- node --------------------------------------------------------------------------------------------


def _profile_name(node: Node) -> str:
    """The display name in the profile's ``profile.json`` ("" without one)."""
    profile = node._profile
    if profile is None:
        return ""
    try:
        data = json.loads((profile / "profile.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else ""


async def _node_status(call: Call) -> Json:
    node = call.node
    return {
        "peer_id": node.peer_id,
        "name": _profile_name(node),
        "fingerprint": node.identity.public.fingerprint,
        "addrs": node.dialable_addrs,
        "peers": len(node.host.get_network().connections),
        "mailboxes": node.mailboxes,
        "blocked_dropped": node.blocked_dropped,
    }


async def _node_invite(call: Call) -> Json:
    node = call.node
    invite = node.devices.root_invite or Invite.create(
        node.identity,
        name=_profile_name(node),
        addrs=node.dialable_addrs[:8],
        mailboxes=tuple(node.mailboxes[:4]),
        # the node owns the prekeys while it runs: its messenger hands out (and stores) the bundle
        bundle=node._messenger.bundle(wall_now=node._wall_clock()).encode(),
    )
    qr = invite.qr()
    return {"text": invite.to_text(), "qr_svg": qr.svg_inline(scale=4)}


# --- contacts ----------------------------------------------------------------------------------------


async def _contacts_list(call: Call) -> Json:
    node = call.node
    return [contact_json(c, node) for c in sorted(node.contacts, key=lambda c: c.name.casefold())]


async def _contacts_add(call: Call) -> Json:
    node = call.node
    args = call.args
    contact = node.contacts.add(
        args["invite"], name=args["petname"], verified=args["verified"], replace_key=args["replace_key"]
    )
    return contact_json(contact, node)


async def _contacts_add_qr(call: Call) -> Json:
    node = call.node
    text = read_qr(call.args["image"])
    contact = node.contacts.add(text, name=call.args["petname"], verified=call.args["verified"])
    return contact_json(contact, node)


def read_qr(image: bytes) -> str:
    """The invite in a photo of a QR code (PNG or JPEG); ``DecodeError`` if there is none."""
    import zxingcpp  # noqa: PLC0415 (only for this method)
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(image)) as picture:
            width, height = picture.size
            if width * height > MAX_QR_PIXELS:  # checked from the header, before decoding
                raise DecodeError("QR image", f"{width}x{height} pixels; the limit is {MAX_QR_PIXELS:,}")
            barcodes = zxingcpp.read_barcodes(picture.convert("L"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DecodeError("QR image", f"not a PNG or JPEG image ({exc})") from None
    for barcode in barcodes:
        if barcode.text.startswith("MESHCHAT:"):
            return str(barcode.text)
    raise DecodeError("QR image", "no meshchat invite QR code found in it")


async def _contacts_verify(call: Call) -> Json:
    return contact_json(call.node.contacts.verify(call.args["contact"]), call.node)


async def _contacts_accept_key(call: Call) -> Json:
    return contact_json(call.node.contacts.accept_key(call.args["contact"]), call.node)


async def _contacts_rename(call: Call) -> Json:
    return contact_json(call.node.contacts.rename(call.args["contact"], call.args["petname"]), call.node)


async def _contacts_block(call: Call) -> Json:
    call.node.contacts.block(call.args["contact"])
    return {}


async def _contacts_unblock(call: Call) -> Json:
    call.node.contacts.unblock(call.args["contact"])
    return {}


async def _contacts_blocked(call: Call) -> Json:
    return {"blocked": [p.peer_id for p in call.node.contacts.blocked()]}


async def _contacts_safety_number(call: Call) -> Json:
    node = call.node
    contact = node.contacts.find(call.args["contact"])
    own = node.devices.root_invite.public if node.devices.root_invite else node.identity.public
    number = safety_number(own, contact.public)
    import segno  # noqa: PLC0415 (only here and for invites)

    return {"number": number, "qr_svg": segno.make(number.replace(" ", "")).svg_inline(scale=4)}


# --- messages ----------------------------------------------------------------------------------------


async def _messages_send(call: Call) -> Json:
    node = call.node
    handle = await node.send(call.args["to"], call.args["text"], ref=call.args["ref"])
    record = handle.record
    return message_json(
        message_id=record.message_id,
        outgoing=True,
        peer=_peer_of(record.recipient),
        body=call.args["text"].encode("utf-8"),
        sent_at_ms=int(record.created_at * 1000),
        status=record.status,
        cursor=cursor_of(node, record.message_id),
    )


def _peer_of(key: bytes) -> str:
    return PublicIdentity.from_bytes(key).peer_id


async def _messages_conversation(call: Call) -> Json:
    node = call.node
    peer = key_of(node.contacts, call.args["with"])
    limit = call.args["limit"]
    entries = node.conversation(peer, before=call.args["before"], limit=limit + 1)
    more = len(entries) > limit
    return {"messages": [entry_message(e, peer.peer_id) for e in entries[-limit:]], "more": more}


async def _messages_inbox(call: Call) -> Json:
    node = call.node
    records = node.inbox(after=call.args["after"], limit=call.args["limit"])
    return {"messages": [inbox_message(r, cursor_of(node, r.message_id)) for r in records]}


async def _messages_outbox(call: Call) -> Json:
    return {"messages": [outbox_entry(r) for r in call.node.outbox(call.args["limit"])]}


async def _messages_mark_read(call: Call) -> Json:
    call.node.mark_read_id(call.args["id"])  # UnknownMessage if no received message has that id
    return {}


# --- events ------------------------------------------------------------------------------------------


async def _events_subscribe(call: Call) -> Json:
    return {"subscription": call.caller.subscribe()}


async def _events_unsubscribe(call: Call) -> Json:
    call.caller.unsubscribe(call.args["subscription"])
    return {}


# --- the table ---------------------------------------------------------------------------------------

_PETNAME = Param(
    name="petname",
    kind=Kind.STRING,
    doc="Your own name for them (default: the name the invite claims).",
    required=False,
    nullable=True,
    max_length=256,
)
_VERIFIED = Param(
    name="verified",
    kind=Kind.BOOLEAN,
    doc="You compared the safety number in person (or scanned their QR code).",
    required=False,
    default=False,
)
_ANYONE = Param(name="contact", kind=Kind.STRING, doc="A contact's name or PeerId, or any PeerId.")
_LIMIT = Param(
    name="limit",
    kind=Kind.INTEGER,
    doc="Most messages returned.",
    required=False,
    default=CONVERSATION_PAGE,
    minimum=1,
    maximum=MAX_PAGE,
)

#: Every method: ``meshchat.app.params.Method`` rows (and ``MORE_METHODS``: groups, files, ...).
METHODS: tuple[Method, ...] = (
    Method(
        name="node.status",
        doc="Who this node is and how it is connected.",
        returns="{peer_id, name, fingerprint, addrs, peers, mailboxes, blocked_dropped}",
        params=(),
        example=Example(
            params={},
            result={
                "peer_id": _PEER,
                "name": "Alice",
                "fingerprint": "12345 67890 12345 67890 12345 67890",
                "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{_PEER}"],
                "peers": 3,
                "mailboxes": [],
                "blocked_dropped": 0,
            },
        ),
        handler=_node_status,
    ),
    Method(
        name="node.invite",
        doc="This profile's invite (with the addresses the node listens on, its mailboxes and a prekey "
        "bundle) as text and as a QR code (an inline SVG).",
        returns="{text, qr_svg}",
        params=(),
        example=Example(params={}, result={"text": "MESHCHAT:...", "qr_svg": "<svg ...>...</svg>"}),
        handler=_node_invite,
    ),
    Method(
        name="contacts.list",
        doc="Every contact, by name.",
        returns="[Contact]",
        params=(),
        example=Example(params={}, result=[_CONTACT]),
        handler=_contacts_list,
    ),
    Method(
        name="contacts.add",
        doc="Verify an invite and add its owner as a contact (KeyChanged if a contact of that name has "
        "another key).",
        returns="Contact",
        params=(
            Param(name="invite", kind=Kind.STRING, doc="The invite text (MESHCHAT:...).", max_length=8192),
            _PETNAME,
            _VERIFIED,
            Param(
                name="replace_key",
                kind=Kind.BOOLEAN,
                doc="Replace a contact of the same name whose key differs (it becomes `changed` until "
                "accepted or verified); without it that is a KeyChanged error.",
                required=False,
                default=False,
            ),
        ),
        example=Example(params={"invite": "MESHCHAT:...", "petname": "Bob"}, result=_CONTACT),
        handler=_contacts_add,
    ),
    Method(
        name="contacts.add_qr",
        doc="Add a contact from a photo of their invite's QR code (PNG or JPEG, read with zxing-cpp).",
        returns="Contact",
        params=(
            Param(name="image", kind=Kind.BASE64, doc="The image, base64.", max_length=MAX_QR_IMAGE),
            _PETNAME,
            _VERIFIED,
        ),
        example=Example(params={"image": "iVBORw0KGgo...", "petname": "Bob"}, result=_CONTACT),
        handler=_contacts_add_qr,
    ),
    Method(
        name="contacts.verify",
        doc="Mark a contact verified: you compared the safety number (or scanned their QR code) in person.",
        returns="Contact",
        params=(_CONTACT_PARAM,),
        example=Example(params={"contact": "Bob"}, result={**_CONTACT, "verification": "verified"}),
        handler=_contacts_verify,
    ),
    Method(
        name="contacts.accept_key",
        doc="Accept a contact's changed key (verification `changed` -> `unverified`): sending works again.",
        returns="Contact",
        params=(_CONTACT_PARAM,),
        example=Example(params={"contact": "Bob"}, result=_CONTACT),
        handler=_contacts_accept_key,
    ),
    Method(
        name="contacts.rename",
        doc="Give a contact your own name for them (null: show the name their invite claims).",
        returns="Contact",
        params=(
            _CONTACT_PARAM,
            Param(
                name="petname", kind=Kind.STRING, doc="The new name, or null.", nullable=True, max_length=256
            ),
        ),
        example=Example(
            params={"contact": "Bob", "petname": "Bobby"},
            result={**_CONTACT, "name": "Bobby", "petname": "Bobby"},
        ),
        handler=_contacts_rename,
    ),
    Method(
        name="contacts.block",
        doc="Block a contact or a stranger (by PeerId): what they send is dropped unread, never shown.",
        returns="{}",
        params=(_ANYONE,),
        example=Example(params={"contact": "Bob"}, result={}),
        handler=_contacts_block,
    ),
    Method(
        name="contacts.unblock",
        doc="Unblock someone blocked.",
        returns="{}",
        params=(_ANYONE,),
        example=Example(params={"contact": "Bob"}, result={}),
        handler=_contacts_unblock,
    ),
    Method(
        name="contacts.blocked",
        doc="Everyone blocked, by PeerId.",
        returns="{blocked: [PeerId]}",
        params=(),
        example=Example(params={}, result={"blocked": [_PEER]}),
        handler=_contacts_blocked,
    ),
    Method(
        name="contacts.safety_number",
        doc="The 60-digit safety number you and the contact should both see, and a QR code of it.",
        returns="{number, qr_svg}",
        params=(_CONTACT_PARAM,),
        example=Example(
            params={"contact": "Bob"},
            result={"number": " ".join(["12345"] * 12), "qr_svg": "<svg ...>...</svg>"},
        ),
        handler=_contacts_safety_number,
    ),
    Method(
        name="messages.send",
        doc="Send a sealed message to a contact: written to the outbox at once, then delivered and "
        "retried in the background (its status follows as `status` events).",
        returns="Message",
        params=(
            Param(name="to", kind=Kind.STRING, doc="A contact's name or PeerId."),
            Param(name="text", kind=Kind.STRING, doc="The message.", max_length=60_000),
            Param(
                name="ref",
                kind=Kind.STRING,
                doc="An idempotency key: sending again with the same ref returns the first message.",
                required=False,
                default="",
                max_length=256,
            ),
        ),
        example=Example(params={"to": "Bob", "text": "hello"}, result=_MESSAGE),
        handler=_messages_send,
    ),
    Method(
        name="messages.conversation",
        doc="A page of the conversation with a contact, oldest first: the `limit` newest messages "
        "before `before` (a cursor; none: the newest).",
        returns="{messages: [Message], more}",
        params=(
            Param(name="with", kind=Kind.STRING, doc="A contact's name or PeerId."),
            Param(
                name="before",
                kind=Kind.INTEGER,
                doc="Only messages with a cursor below this one (page back with the first message's).",
                required=False,
                nullable=True,
                minimum=0,
            ),
            _LIMIT,
        ),
        example=Example(params={"with": "Bob", "limit": 50}, result={"messages": [_MESSAGE], "more": False}),
        handler=_messages_conversation,
    ),
    Method(
        name="messages.inbox",
        doc="Received messages numbered after `after`, in arrival order (resume from the last "
        "`number` handled).",
        returns="{messages: [Message]}",
        params=(
            Param(
                name="after",
                kind=Kind.INTEGER,
                doc="Only messages numbered after this.",
                required=False,
                default=0,
                minimum=0,
            ),
            _LIMIT,
        ),
        example=Example(
            params={"after": 0},
            result={"messages": [{**_MESSAGE, "outgoing": False, "status": None, "number": 1}]},
        ),
        handler=_messages_inbox,
    ),
    Method(
        name="messages.outbox",
        doc="The most recently sent messages, newest first, with where each is.",
        returns="{messages: [{id, peer, status, error, created_at, attempts, stored_on, ref}]}",
        params=(_LIMIT,),
        example=Example(
            params={"limit": 10},
            result={
                "messages": [
                    {
                        "id": _MID,
                        "peer": _PEER,
                        "status": "delivered",
                        "error": "",
                        "created_at": 1764921600.5,
                        "attempts": 1,
                        "stored_on": [],
                        "ref": "",
                    }
                ]
            },
        ),
        handler=_messages_outbox,
    ),
    Method(
        name="messages.mark_read",
        doc="Mark a received message read: its sender gets a signed read receipt.",
        returns="{}",
        params=(Param(name="id", kind=Kind.HEX, doc="The message's id.", max_length=32),),
        example=Example(params={"id": _MID}, result={}),
        handler=_messages_mark_read,
    ),
    Method(
        name="events.subscribe",
        doc="Receive the node's events as `event` notifications: {subscription, event}.",
        returns="{subscription}",
        params=(),
        example=Example(params={}, result={"subscription": "s1"}),
        handler=_events_subscribe,
    ),
    Method(
        name="events.unsubscribe",
        doc="Stop a subscription of this session.",
        returns="{}",
        params=(Param(name="subscription", kind=Kind.STRING, doc="Its name.", max_length=64),),
        example=Example(params={"subscription": "s1"}, result={}),
        handler=_events_unsubscribe,
    ),
    *MORE_METHODS,
)
