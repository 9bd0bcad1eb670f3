"""JSON-RPC 2.0 sessions over one node's method table: requests, notifications and batches.

```python
async with open_methods(node) as methods, open_session(methods, notify=send_text) as session:
    reply = await session.handle('{"jsonrpc":"2.0","id":1,"method":"node.status"}')  # a str, or None
```

What it is: the protocol half of the daemon, transport-free (the Unix socket in ``meshchat.app.unix``
and the WebSocket in ``meshchat.app.server`` feed it text and send back what it returns). It follows
https://www.jsonrpc.org/specification strictly: ``"jsonrpc": "2.0"`` and nothing else, a string
``method``, ``params`` by name as an object (this daemon takes no positional arrays: -32602), an ``id``
that is a string, a number or null (a request without ``id`` is a notification: it runs and nothing is
answered, not even an error), no other members. A batch is an array of up to ``MAX_BATCH`` requests,
run in order; its answer is the array of the answers to its requests (none if all were notifications).

Client input never raises out of ``handle``: text that is not UTF-8 JSON, JSON with a duplicate name in
an object, ``NaN``/``Infinity`` or a number too large for a float (-32700), a message over
``MAX_MESSAGE`` bytes, a malformed request or batch (-32600), an unknown method (-32601), parameters
that do not fit the method's table row (-32602, ``data.param`` names the parameter), a refusal by the
library (-32000, ``data`` = ``{"type": "UnknownPeer", "message": "..."}``) each become a JSON-RPC
error object; a bug in a method is -32603 (and logged), never the end of the session.

Events: ``events.subscribe`` starts a subscription (at most ``MAX_SUBSCRIPTIONS`` per session); its
events reach the client through ``notify`` as ``{"jsonrpc":"2.0","method":"event","params":
{"subscription": s, "event": E}}``, from a task of the session's own, so a slow client never holds up
the node or anyone else (``meshchat.app.events``). Leaving ``open_session`` ends them all.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from meshchat.app.auth import check_token
from meshchat.app.events import Subscription
from meshchat.app.params import Call, InvalidParams, Json, check_params
from meshchat.errors import MeshchatError, QuotaExceeded

if TYPE_CHECKING:
    from meshchat.app.methods import Methods

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIBRARY_ERROR",
    "MAX_BATCH",
    "MAX_MESSAGE",
    "MAX_SUBSCRIPTIONS",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "UNAUTHORIZED",
    "RpcSession",
    "check_auth",
    "dumps",
    "error_response",
    "loads",
    "open_session",
]

#: Largest message accepted, bytes of UTF-8: a message of 1 MiB is far beyond any request this
#: daemon has (the longest, ``contacts.add_qr``, carries a photo of a QR code), and bounds the memory
#: one client's message costs before it is parsed.
MAX_MESSAGE = 1024 * 1024
#: Most requests in one batch: a client that wants more sends more batches (each answered in turn).
MAX_BATCH = 100
#: Most event subscriptions one session holds at once (each has a queue of
#: ``meshchat.app.events.SUBSCRIBER_QUEUE`` events).
MAX_SUBSCRIPTIONS = 16

#: JSON-RPC 2.0 error codes (the specification's, then the daemon's own in its server-error range).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: The library refused (a ``MeshchatError``): ``data`` names its type and message.
LIBRARY_ERROR = -32000
#: The Unix socket's first request was not a valid ``auth``.
UNAUTHORIZED = -32001

_REQUEST_MEMBERS = frozenset({"jsonrpc", "method", "params", "id"})

_log = logging.getLogger("meshchat.app")


class _Refused(Exception):
    """A message or request that is refused before any method runs (carries its JSON-RPC error)."""

    def __init__(self, code: int, message: str, data: Json = None) -> None:
        self.code = code
        self.data = data
        super().__init__(message)


# --- JSON in and out ---------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Json]]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate name {name!r} in an object")
        out[name] = value
    return out


def _no_constant(name: str) -> Json:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large")
    return value


def loads(text: str | bytes) -> Json:
    """Strict JSON: UTF-8, at most ``MAX_MESSAGE`` bytes, no duplicate names, no NaN or Infinity, no
    number that overflows a float. ``_Refused`` (-32700 or -32600) otherwise."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_MESSAGE:
        raise _Refused(
            INVALID_REQUEST,
            f"message is {size:,} bytes; the limit is {MAX_MESSAGE:,}",
            {"size": size, "limit": MAX_MESSAGE},
        )
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(
            decoded,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError as exc:
        raise _Refused(PARSE_ERROR, f"parse error: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:  # arrays or objects nested thousands deep
        raise _Refused(PARSE_ERROR, "parse error: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, the hooks above, ints over 4,300 digits
        raise _Refused(PARSE_ERROR, f"parse error: {exc}") from None


def dumps(value: Json) -> str:
    """Compact JSON, ASCII only (so a client's unpaired surrogates come back escaped, as they came)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def error_response(request_id: Json, code: int, message: str, data: Json = None) -> dict[str, Json]:
    """A JSON-RPC error response."""
    error: dict[str, Json] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _valid_id(value: Json) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def check_auth(text: str | bytes, token: str) -> tuple[str, bool]:
    """A transport's first message: whether it is ``{"jsonrpc": "2.0", "id": ..., "method": "auth",
    "params": {"token": T}}`` with ``token`` (compared in constant time), and the answer to send:
    ``{}`` if so, else error -32001 (then the transport closes the connection)."""
    try:
        message = loads(text)
    except _Refused:
        message = None
    request = message if isinstance(message, dict) else {}
    given = request.get("id")
    request_id: Json = given if _valid_id(given) else None
    params = request.get("params")
    ok = (
        request.get("jsonrpc") == "2.0"
        and request.get("method") == "auth"
        and "id" in request
        and _valid_id(given)
        and isinstance(params, dict)
        and set(params) == {"token"}
        and isinstance(params["token"], str)
        and check_token(params["token"], token)
    )
    if ok:
        return dumps({"jsonrpc": "2.0", "id": request_id, "result": {}}), True
    why = 'unauthorized: the first request must be "auth" with the token from the profile\'s daemon.token'
    return dumps(error_response(request_id, UNAUTHORIZED, why)), False


# --- sessions ----------------------------------------------------------------------------------------


class RpcSession:
    """One client's session: answers its messages, holds its event subscriptions. Use ``open_session``."""

    def __init__(
        self, methods: Methods, notify: Callable[[str], Awaitable[None]], nursery: trio.Nursery
    ) -> None:
        """Used by ``open_session``."""
        self._methods = methods
        self._notify = notify
        self._nursery = nursery
        self._subscriptions: dict[str, Subscription] = {}
        self._next = 0

    async def handle(self, text: str | bytes) -> str | None:
        """Answer one message (a request, a notification or a batch): the response text, or None when
        there is nothing to answer (notifications). Never raises for anything a client sends."""
        try:
            message = loads(text)
        except _Refused as refused:
            return dumps(error_response(None, refused.code, str(refused), refused.data))
        if not isinstance(message, list):
            return await self._answer(message)
        if not message:
            return dumps(error_response(None, INVALID_REQUEST, "invalid request: an empty batch"))
        if len(message) > MAX_BATCH:
            return dumps(
                error_response(
                    None,
                    INVALID_REQUEST,
                    f"a batch of {len(message):,} requests; the limit is {MAX_BATCH}",
                    {"size": len(message), "limit": MAX_BATCH},
                )
            )
        answers = [answer for item in message if (answer := await self._answer(item)) is not None]
        return "[" + ",".join(answers) + "]" if answers else None

    async def _answer(self, request: Json) -> str | None:
        """One request's response text (None for a notification)."""
        # An invalid request is answered with its id when that much of it is readable.
        given = request.get("id") if isinstance(request, dict) else None
        request_id: Json = given if _valid_id(given) else None
        try:
            notification = _check_request(request)
            result = await self._call(request["method"], request.get("params", {}))
            if notification:
                return None
            return _result_text(request_id, result)
        except _Refused as refused:
            if isinstance(request, dict) and "id" not in request and refused.code != INVALID_REQUEST:
                return None  # a notification's failure is not answered (JSON-RPC 2.0, section 4.1)
            return dumps(error_response(request_id, refused.code, str(refused), refused.data))

    async def _call(self, name: str, params: Json) -> Json:
        method = self._methods.table.get(name)
        if method is None:
            raise _Refused(METHOD_NOT_FOUND, f"method not found: {name!r}", {"method": name})
        if not isinstance(params, dict):
            raise _Refused(INVALID_PARAMS, "params must be an object (this daemon takes them by name)")
        try:
            args = check_params(method, params)
            return await method.handler(Call(node=self._methods.node, args=args, caller=self))
        except InvalidParams as exc:
            raise _Refused(INVALID_PARAMS, str(exc), {"param": exc.param}) from None
        except MeshchatError as exc:
            raise _Refused(
                LIBRARY_ERROR, str(exc), {"type": type(exc).__name__, "message": str(exc)}
            ) from None
        except Exception as exc:
            # The boundary between a client and the node: a bug in one method (a library call that
            # raised something untyped) must cost that call, not the session or the daemon.
            _log.exception("JSON-RPC method %s failed", name)
            raise _Refused(INTERNAL_ERROR, f"internal error in {name}: {type(exc).__name__}") from None

    # --- events (the ``Caller`` side the method table uses) ------------------------------------------

    def subscribe(self) -> str:
        """Start an event subscription; its events go to this client as notifications."""
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            raise QuotaExceeded(
                what="event subscriptions of this session",
                used=len(self._subscriptions),
                limit=MAX_SUBSCRIPTIONS,
            )
        self._next += 1
        name = f"s{self._next}"
        subscription = self._methods.hub.subscribe()
        self._subscriptions[name] = subscription
        self._nursery.start_soon(self._forward, name, subscription)
        return name

    def unsubscribe(self, subscription: str) -> None:
        """End one of this session's subscriptions."""
        found = self._subscriptions.pop(subscription, None)
        if found is None:
            raise InvalidParams(f"no subscription {subscription!r} in this session", param="subscription")
        self._methods.hub.unsubscribe(found)

    async def _forward(self, name: str, subscription: Subscription) -> None:
        """Send ``subscription``'s events to the client, then, if the hub cut it off because the
        client fell behind, one ``overflow`` event saying so."""
        async for event in subscription.receive:
            await self._notify(_event_text(name, event))
        if subscription.overflowed:
            self._subscriptions.pop(name, None)
            await self._notify(_event_text(name, {"type": "overflow", "subscribed": False}))

    def close(self) -> None:
        """End every subscription of this session."""
        for subscription in self._subscriptions.values():
            self._methods.hub.unsubscribe(subscription)
        self._subscriptions.clear()


def _check_request(request: Json) -> bool:
    """Whether ``request`` is a notification; ``_Refused`` (-32600) if it is not a request."""
    if not isinstance(request, dict):
        raise _Refused(INVALID_REQUEST, "invalid request: not an object")
    request_id = request.get("id")
    if not _valid_id(request_id):
        raise _Refused(INVALID_REQUEST, "invalid request: id must be a string, a number or null")
    if request.get("jsonrpc") != "2.0":
        raise _Refused(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    if not isinstance(request.get("method"), str):
        raise _Refused(INVALID_REQUEST, 'invalid request: "method" must be a string')
    extra = sorted(set(request) - _REQUEST_MEMBERS)
    if extra:
        raise _Refused(INVALID_REQUEST, f"invalid request: unknown member {extra[0]!r}")
    return "id" not in request


def _result_text(request_id: Json, result: Json) -> str:
    try:
        return dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
    except (TypeError, ValueError) as exc:  # a method returned something JSON cannot carry: a bug
        _log.error("JSON-RPC result not serialisable: %s", exc)
        return dumps(error_response(request_id, INTERNAL_ERROR, "internal error: result not JSON"))


def _event_text(subscription: str, event: Json) -> str:
    return dumps(
        {"jsonrpc": "2.0", "method": "event", "params": {"subscription": subscription, "event": event}}
    )


@asynccontextmanager
async def open_session(
    methods: Methods, notify: Callable[[str], Awaitable[None]]
) -> AsyncIterator[RpcSession]:
    """A session for one client of ``methods``; ``notify(text)`` sends it a notification (events).
    Leaving the block ends the session's subscriptions. The transport has authenticated the client."""
    async with trio.open_nursery() as nursery:
        session = RpcSession(methods, notify, nursery)
        try:
            yield session
        finally:
            session.close()
            nursery.cancel_scope.cancel()
