"""Strict msgpack decoding shared by every meshchat wire object.

msgpack alone accepts many byte strings for one value (an integer in a wider format than needed, map
keys in another order, float32 for float64). Message ids are hashes of bytes, so a second encoding of
the same envelope would be a second message that slips past every seen-cache. So the canonical form
is: the shortest encoding of every value (what ``msgpack.packb`` writes) and map keys in strictly
ascending order (``pack`` sorts them; ``unpack_canonical`` refuses anything else, duplicates included).
``unpack_canonical`` accepts only that form: one value, one encoding. It also checks the size before
parsing and bounds every container, and turns every failure of the msgpack library into
``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from meshchat.errors import DecodeError, TooLarge

__all__ = ["pack", "unpack_bounded", "unpack_canonical"]

#: No meshchat object has more entries than this in one array or map.
MAX_CONTAINER_ITEMS = 64
#: No meshchat object nests containers deeper than this (envelopes: 1, invites: 2).
MAX_DEPTH = 8


_CONTAINERS = (dict, list, tuple)


class _KeyOrderError(ValueError):
    """Map keys are not integers in strictly ascending order (out of order, duplicated, or not ints)."""


def _ordered_map(pairs: list[tuple[object, object]]) -> dict[object, object]:
    # Every meshchat map has integer keys. Exact ints only: True == 1 == 1.0 as dict keys, so a bool or
    # float key would be a second spelling of the same map.
    previous: int | None = None
    for key, _ in pairs:
        if type(key) is not int or (previous is not None and key <= previous):
            raise _KeyOrderError("map keys must be integers in strictly ascending order")
        previous = key
    return dict(pairs)


def _depth_within(value: object, limit: int) -> bool:
    """True if containers nest at most ``limit`` deep (iterative: hostile input cannot exhaust the stack)."""
    if type(value) is dict:
        for child in value.values():
            if isinstance(child, _CONTAINERS):
                break
        else:
            return True  # the common case, a flat map (an envelope): nothing nested to walk
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, (tuple, list)):
            children = list(item)
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _sorted_maps(value: object) -> object:
    if isinstance(value, dict):
        keys = list(value)
        if keys == sorted(keys) and not any(isinstance(v, _CONTAINERS) for v in value.values()):
            return value  # the common case (a flat map written in key order): nothing to rebuild
        return {key: _sorted_maps(value[key]) for key in sorted(keys)}
    if isinstance(value, (tuple, list)):
        return [_sorted_maps(item) for item in value]
    return value


def pack(value: object) -> bytes:
    """Encode ``value`` the one canonical way ``unpack_canonical`` accepts (map keys sorted)."""
    data: bytes = msgpack.packb(_sorted_maps(value), use_bin_type=True)
    return data


def unpack_bounded(
    data: bytes,
    *,
    what: str,
    limit: int,
    max_str: int | None = None,
    max_items: int = MAX_CONTAINER_ITEMS,
    max_map: int | None = None,
    use_list: bool = False,
    object_pairs_hook: Callable[[list[tuple[object, object]]], object] | None = None,
) -> object:
    """Decode exactly one msgpack value of at most ``limit`` bytes, every length bounded.

    The one place meshchat calls ``msgpack.unpackb`` on a peer's bytes: ``TooLarge`` before parsing when
    ``data`` is over ``limit``; ``DecodeError`` for trailing bytes, a string over ``max_str`` (default
    ``limit``), an array over ``max_items`` entries, a map over ``max_map`` (default ``max_items``),
    an extension type, and anything else the msgpack library refuses.
    """
    if len(data) > limit:
        raise TooLarge(what=what, size=len(data), limit=limit)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=use_list,
            strict_map_key=False,
            max_bin_len=limit,
            max_str_len=limit if max_str is None else max_str,
            max_array_len=max_items,
            max_map_len=max_items if max_map is None else max_map,
            max_ext_len=0,
            object_pairs_hook=object_pairs_hook,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(what, "trailing bytes after the encoded value") from exc
    except _KeyOrderError as exc:
        raise DecodeError(what, str(exc)) from exc
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        # UnicodeDecodeError, OutOfData, FormatError, StackError, over-limit lengths and unhashable keys.
        raise DecodeError(what, f"not valid msgpack within limits ({type(exc).__name__})") from exc


def unpack_canonical(data: bytes, *, what: str, limit: int) -> object:
    """Decode one msgpack value of at most ``limit`` bytes, in canonical form, with nothing after it.

    Raises ``TooLarge`` before parsing when ``data`` is over ``limit``, and ``DecodeError`` for anything
    that is not exactly one canonically encoded value (map keys ascending integers, no extension types,
    containers nested at most ``MAX_DEPTH`` deep).
    """
    value = unpack_bounded(data, what=what, limit=limit, object_pairs_hook=_ordered_map)
    if not _depth_within(value, MAX_DEPTH):
        raise DecodeError(what, f"containers nested deeper than {MAX_DEPTH}")
    try:
        # The decoder already refused maps whose keys do not ascend, so no sorting is needed here.
        canonical = msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(what, "value cannot be re-encoded") from exc
    if canonical != data:
        raise DecodeError(what, "non-canonical msgpack encoding")
    return value
