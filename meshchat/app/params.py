"""The JSON-RPC method table's building blocks: parameter kinds, the typed checker, a method's record.

Each method is declared once, as a ``Method`` (name, parameters with their kinds, docstring, an example
request and response, handler); ``meshchat.app.methods`` holds the table, ``meshchat.app.jsonrpc``
checks a request's ``params`` against it with ``check_params`` before the handler runs, and
docs/daemon.md is checked against it by the tests. Nothing here knows the network or the node.

A client's mistake in ``params`` is ``InvalidParams`` (JSON-RPC -32602) naming the parameter: a
missing required one, an unknown name, or a value of the wrong kind or out of bounds.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from meshchat.node import Node

__all__ = [
    "MAX_STRING",
    "Call",
    "Caller",
    "Example",
    "InvalidParams",
    "Json",
    "Kind",
    "Method",
    "Param",
    "check_params",
]

#: A JSON value as ``json.loads`` gives it (objects, arrays, strings, numbers, booleans, null).
Json: TypeAlias = Any

#: Longest string parameter accepted, characters, unless a parameter says otherwise: a whole message
#: is at most 1 MiB anyway; this keeps one field from being most of it by accident.
MAX_STRING = 256 * 1024

_HEX = re.compile(r"[0-9a-fA-F]*")


class InvalidParams(Exception):
    """A request's ``params`` do not fit its method (JSON-RPC -32602); names the parameter."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class Kind(Enum):
    """What JSON a parameter takes, and what the handler gets."""

    #: A JSON string (without unpaired surrogates, so it encodes as UTF-8).
    STRING = "string"
    #: A JSON integer (not a boolean, not a fraction).
    INTEGER = "integer"
    #: ``true`` or ``false``.
    BOOLEAN = "boolean"
    #: A string of hex digits, even in length; the handler gets the bytes.
    HEX = "hex string"
    #: A base64 string (standard alphabet, padded); the handler gets the bytes.
    BASE64 = "base64 string"
    #: An array of strings.
    STRINGS = "array of strings"
    #: A JSON object (name -> value).
    OBJECT = "object"


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One named parameter of a method."""

    #: Its name in ``params``.
    name: str
    #: What it takes.
    kind: Kind
    #: What it means (docs/daemon.md shows it).
    doc: str
    #: Whether a request must give it.
    required: bool = True
    #: What the handler gets when it is left out (only for optional parameters).
    default: Json = None
    #: Whether ``null`` is accepted (then the handler gets None).
    nullable: bool = False
    #: Bounds of an ``INTEGER``, inclusive.
    minimum: int | None = None
    maximum: int | None = None
    #: Longest ``STRING`` (characters), ``HEX``/``BASE64`` (decoded bytes) or ``STRINGS`` (items).
    max_length: int = MAX_STRING

    def describe(self) -> str:
        """Its kind for people: ``string``, ``integer 1..500``, ``string or null``."""
        text = self.kind.value
        if self.minimum is not None or self.maximum is not None:
            low = "" if self.minimum is None else str(self.minimum)
            high = "" if self.maximum is None else str(self.maximum)
            text += f" {low}..{high}"
        return text + (" or null" if self.nullable else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Example:
    """An example request's params and the shape of its result (docs/daemon.md shows both; the tests
    run the params against a real node and compare the result's shape)."""

    #: The request's ``params``.
    params: dict[str, Json]
    #: A result it may give.
    result: Json


class Caller(Protocol):
    """The session a call came in on: what a handler may ask of it (events)."""

    def subscribe(self) -> str:
        """Start an event subscription for this client; return its name."""
        ...

    def unsubscribe(self, subscription: str) -> None:
        """End one (``InvalidParams`` if this client has none of that name)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One checked call, as a handler gets it."""

    #: The node the methods run on.
    node: Node
    #: The checked parameters, every declared one present (defaults filled in).
    args: dict[str, Json]
    #: The client's session.
    caller: Caller


#: A method's implementation: the checked call in, the JSON result out (``MeshchatError`` for a
#: refusal the client should see as -32000).
Handler: TypeAlias = Callable[[Call], Awaitable[Json]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Method:
    """One JSON-RPC method: its table row."""

    #: ``prefix.verb``.
    name: str
    #: What it does (docs/daemon.md shows it).
    doc: str
    #: What it returns, in words.
    returns: str
    #: Its parameters, by name.
    params: tuple[Param, ...]
    #: An example call.
    example: Example
    #: The implementation.
    handler: Handler = field(repr=False)


def check_params(method: Method, params: Mapping[str, Json]) -> dict[str, Json]:
    """``params`` checked against ``method``'s table row, converted (hex and base64 to bytes), with
    defaults filled in. ``InvalidParams`` naming the first parameter that does not fit."""
    declared = {p.name: p for p in method.params}
    unknown = sorted(name for name in params if name not in declared)
    if unknown:
        allowed = ", ".join(declared) or "none"
        raise InvalidParams(
            f"{method.name} has no parameter {unknown[0]!r} (its parameters: {allowed})", param=unknown[0]
        )
    out: dict[str, Json] = {}
    for name, param in declared.items():
        if name not in params:
            if param.required:
                raise InvalidParams(
                    f"{method.name} needs parameter {name!r} ({param.describe()})", param=name
                )
            out[name] = param.default
            continue
        out[name] = _check_value(method.name, param, params[name])
    return out


def _wrong(method: str, param: Param, value: Json) -> InvalidParams:
    return InvalidParams(
        f"{method}: parameter {param.name!r} must be {param.describe()}, not {_json_kind(value)}",
        param=param.name,
    )


def _json_kind(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_value(method: str, param: Param, value: Json) -> Json:
    if value is None:
        if param.nullable:
            return None
        raise _wrong(method, param, value)
    match param.kind:
        case Kind.STRING:
            return _check_string(method, param, value)
        case Kind.INTEGER:
            return _check_integer(method, param, value)
        case Kind.BOOLEAN:
            if not isinstance(value, bool):
                raise _wrong(method, param, value)
            return value
        case Kind.HEX:
            text = _check_string(method, param, value, limit=2 * param.max_length)
            if len(text) % 2 or not _HEX.fullmatch(text):  # bytes.fromhex would also take spaces
                raise InvalidParams(
                    f"{method}: parameter {param.name!r} must be hex digits, an even number of them",
                    param=param.name,
                )
            return bytes.fromhex(text)
        case Kind.BASE64:
            text = _check_string(method, param, value, limit=(param.max_length + 2) // 3 * 4)
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error:
                raise InvalidParams(
                    f"{method}: parameter {param.name!r} must be base64 (standard alphabet, padded)",
                    param=param.name,
                ) from None
        case Kind.STRINGS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _wrong(method, param, value)
            if len(value) > param.max_length:
                raise InvalidParams(
                    f"{method}: parameter {param.name!r} has {len(value):,} items; the limit is "
                    f"{param.max_length:,}",
                    param=param.name,
                )
            return [_check_string(method, param, v) for v in value]
        case Kind.OBJECT:
            if not isinstance(value, dict):
                raise _wrong(method, param, value)
            return value
    raise AssertionError(param.kind)  # pragma: no cover (the match covers every Kind)


def _check_string(method: str, param: Param, value: Json, *, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise _wrong(method, param, value)
    limit = param.max_length if limit is None else limit
    if len(value) > limit:
        raise InvalidParams(
            f"{method}: parameter {param.name!r} is {len(value):,} characters; the limit is {limit:,}",
            param=param.name,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800" escapes give Python strings UTF-8 cannot carry
        raise InvalidParams(
            f"{method}: parameter {param.name!r} holds an unpaired surrogate (not Unicode text)",
            param=param.name,
        ) from None
    return value


def _check_integer(method: str, param: Param, value: Json) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(method, param, value)
    if (param.minimum is not None and value < param.minimum) or (
        param.maximum is not None and value > param.maximum
    ):
        raise InvalidParams(
            f"{method}: parameter {param.name!r} is {value}; it must be {param.describe()}",
            param=param.name,
        )
    return value
