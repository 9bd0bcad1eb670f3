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

import itertools

import msgpack

from meshchat.errors import DecodeError, TooLarge

__all__ = ["pack", "unpack_canonical"]

#: No meshchat object has more entries than this in one array or map.
MAX_CONTAINER_ITEMS = 64


class _KeyOrderError(ValueError):
    """Map keys are not strictly ascending (out of order, duplicated, or not comparable)."""


def _ordered_map(pairs: list[tuple[object, object]]) -> dict[object, object]:
    keys = [key for key, _ in pairs]
    try:
        ascending = all(a < b for a, b in itertools.pairwise(keys))  # type: ignore[operator]  # keys are untrusted; TypeError is caught
    except TypeError:
        ascending = False
    if not ascending:
        raise _KeyOrderError("map keys are not in strictly ascending order")
    return dict(pairs)


_CONTAINERS = (dict, list, tuple)


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


def unpack_canonical(data: bytes, *, what: str, limit: int) -> object:
    """Decode one msgpack value of at most ``limit`` bytes, in canonical form, with nothing after it.

    Raises ``TooLarge`` before parsing when ``data`` is over ``limit``, and ``DecodeError`` for anything
    that is not exactly one canonically encoded value (maps may have integer keys; no extension types).
    """
    if len(data) > limit:
        raise TooLarge(what=what, size=len(data), limit=limit)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=False,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=MAX_CONTAINER_ITEMS,
            max_map_len=MAX_CONTAINER_ITEMS,
            max_ext_len=0,
            object_pairs_hook=_ordered_map,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(what, "trailing bytes after the encoded value") from exc
    except _KeyOrderError as exc:
        raise DecodeError(what, str(exc)) from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # UnicodeDecodeError, OutOfData, FormatError, StackError and unhashable keys all land here.
        raise DecodeError(what, f"not valid msgpack ({type(exc).__name__})") from exc
    try:
        canonical = pack(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(what, "value cannot be re-encoded") from exc
    if canonical != data:
        raise DecodeError(what, "non-canonical msgpack encoding")
    return value
