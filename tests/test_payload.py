"""The payload inside a sealed body: one byte form per chat or receipt.

Alternative spellings are written by hand (a fixmap of already-encoded pairs) so each can be an
encoding that is canonical msgpack in itself (``True``, ``1.0``) or one msgpack never writes (a wider
integer format, ``str`` for ``bin``, keys out of order). Every one of them must be refused with
``DecodeError``; only the bytes ``encode_payload`` writes decode.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshchat.errors import DecodeError
from meshchat.store.payload import MAX_RECEIPT_IDS, Chat, Receipt, ReceiptKind, decode_payload, encode_payload


def _enc(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _map(items: list[tuple[bytes, bytes]]) -> bytes:
    return bytes([0x80 | len(items)]) + b"".join(key + value for key, value in items)


def _int_forms(value: int) -> list[bytes]:
    """Every msgpack spelling of a small non-negative int, the shortest first, plus lookalikes."""
    forms = [_enc(value), b"\xcc" + struct.pack(">B", value), b"\xcd" + struct.pack(">H", value)]
    forms += [b"\xce" + struct.pack(">I", value), b"\xcf" + struct.pack(">Q", value)]
    forms += [b"\xd0" + struct.pack(">b", value), b"\xd3" + struct.pack(">q", value)]
    forms += [_enc(float(value)), b"\xca" + struct.pack(">f", float(value))]
    if value in (0, 1):
        forms.append(_enc(bool(value)))
    return list(dict.fromkeys(forms))  # the shortest int form may coincide with none, keep order


def _chat_forms(seq: int, body: bytes) -> list[bytes]:
    out = []
    for tag in _int_forms(1):
        for seq_form in _int_forms(seq) if seq < 128 else [_enc(seq), _enc(float(seq))]:
            for body_form in [_enc(body), *([_enc(body.decode())] if body.isascii() else [])]:
                pairs = [(_enc(1), tag), (_enc(2), seq_form), (_enc(3), body_form)]
                out.append(_map(pairs))
                out.append(_map([pairs[1], pairs[0], pairs[2]]))  # keys out of order
    out.append(_map([(_enc(1), _enc(1)), (_enc(2), _enc(seq)), (_enc(3), _enc(body)), (_enc(6), b"\xc0")]))
    out.append(_enc({1: 1, 2: seq, 3: body}) + b"\x00")  # trailing byte
    return out


def _receipt_forms(kind: ReceiptKind, ids: bytes) -> list[bytes]:
    out = []
    for tag in _int_forms(2):
        for kind_form in _int_forms(int(kind)):
            out.append(_map([(_enc(1), tag), (_enc(4), kind_form), (_enc(5), _enc(ids))]))
    out.append(_map([(_enc(1), _enc(2)), (_enc(5), _enc(ids)), (_enc(4), _enc(int(kind)))]))
    return out


@given(seq=st.integers(1, 2**63 - 1), body=st.binary(max_size=64))
def test_chat_round_trips(seq: int, body: bytes) -> None:
    chat = Chat(seq=seq, body=body)
    assert decode_payload(encode_payload(chat)) == chat


@given(kind=st.sampled_from(ReceiptKind), count=st.integers(1, MAX_RECEIPT_IDS), fill=st.integers(0, 255))
def test_receipt_round_trips(kind: ReceiptKind, count: int, fill: int) -> None:
    receipt = Receipt(kind=kind, message_ids=tuple(bytes([fill, i % 256]) * 16 for i in range(count)))
    assert decode_payload(encode_payload(receipt)) == receipt


@pytest.mark.parametrize(("seq", "body"), [(1, b"hi"), (5, b""), (127, b"\xff\x00"), (1000, b"text")])
def test_every_other_byte_form_of_a_chat_is_refused(seq: int, body: bytes) -> None:
    canonical = encode_payload(Chat(seq=seq, body=body))
    forms = _chat_forms(seq, body)
    assert canonical in forms  # the generator covers the real form too
    for form in forms:
        if form == canonical:
            assert decode_payload(form) == Chat(seq=seq, body=body)
            continue
        with pytest.raises(DecodeError):
            decode_payload(form)


@pytest.mark.parametrize("kind", list(ReceiptKind))
def test_every_other_byte_form_of_a_receipt_is_refused(kind: ReceiptKind) -> None:
    ids = bytes(range(32)) * 2
    canonical = encode_payload(Receipt(kind=kind, message_ids=(ids[:32], ids[32:])))
    forms = _receipt_forms(kind, ids)
    assert canonical in forms
    for form in forms:
        if form != canonical:
            with pytest.raises(DecodeError):
                decode_payload(form)


@pytest.mark.parametrize("tag", [True, 1.0, 2.0])
def test_a_type_tag_that_only_equals_an_int_is_refused(tag: object) -> None:
    """Regression (issue 12, item 8): ``True`` and ``1.0`` decoded as a chat's type tag."""
    fields = {1: tag, 2: 1, 3: b"x"} if tag != 2.0 else {1: tag, 4: 1, 5: bytes(32)}
    data = _enc(fields)  # canonical msgpack on its own: the codec alone cannot tell
    with pytest.raises(DecodeError, match="payload type"):
        decode_payload(data)
