"""Stored predictions straight to the wire bytes of predictstore.v1.Prediction.

Reads (GetPrediction, ListPredictions) answer with predictions as stored. Filling a
pb.Prediction field by field goes through a Python wrapper per field and per nested
message (about 60 us a prediction with a small payload and metadata, most of a
listing's time), and a frame of them is copied once more into the response. The wire
bytes written in one pass, then parsed by upb in C (``FromString``, a few us a
prediction), give the same message at about a fifth of the cost.

Fields go in field-number order with proto3's rules: an empty string or a zero number
is left out, ``confidence`` (optional) is written whenever it is set.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from predictstore.domain.predictions import Prediction
from predictstore.transport.wire.struct_json import struct_bytes

_pack_double = struct.Struct("<d").pack
_ZERO = _pack_double(0.0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Varints of 0-127 (most lengths): one lookup.
_SMALL = [bytes((n,)) for n in range(0x80)]


def varint(n: int) -> bytes:
    """An unsigned varint; a negative int64 as its two's complement (ten bytes)."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _text(tag: bytes, value: str, out: list[bytes]) -> None:
    if value:
        data = value.encode()
        out += (tag, varint(len(data)), data)


def _message(tag: bytes, data: bytes, out: list[bytes]) -> None:
    out += (tag, varint(len(data)), data)


class _Timestamps:
    """timestamp_bytes with the last time kept: the rows of one bulk load share their
    create_time, and a listing reads them in that order."""

    __slots__ = ("data", "value")

    def __init__(self) -> None:
        self.value = _EPOCH
        self.data = b""

    def __call__(self, value: datetime) -> bytes:
        if value == self.value:  # equal instants: the same Timestamp, whatever the zone
            return self.data
        data = timestamp_bytes(value)
        self.value, self.data = value, data
        return data


def timestamp_bytes(value: datetime) -> bytes:
    """google.protobuf.Timestamp of an aware datetime, as Timestamp.FromDatetime."""
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    nanos = delta.microseconds * 1000
    out = b""
    if seconds:
        out = b"\x08" + varint(seconds)
    if nanos:
        out += b"\x10" + varint(nanos)
    return out


_create_time = _Timestamps()


def _forecast(value: float, lower: float, upper: float) -> bytes:
    out = b""
    for tag, number in ((b"\x09", value), (b"\x11", lower), (b"\x19", upper)):
        packed = _pack_double(number)
        if packed != _ZERO:
            out += tag + packed
    return out


def prediction_bytes(p: Prediction) -> bytes:
    """The serialised pb.Prediction of ``p``: ``pb.Prediction.FromString`` of it equals
    prediction_to_proto(p)."""
    out: list[bytes] = []
    _text(b"\x0a", p.prediction_id, out)
    _text(b"\x12", p.user_id, out)
    _text(b"\x1a", p.context, out)
    _text(b"\x22", p.prediction_type, out)
    _message(b"\x2a", struct_bytes(p.payload), out)
    if p.confidence is not None:
        out += (b"\x31", _pack_double(p.confidence))
    if p.forecast is not None:
        f = p.forecast
        _message(b"\x3a", _forecast(f.value, f.lower_bound, f.upper_bound), out)
    _text(b"\x42", p.model_name, out)
    _text(b"\x4a", p.model_version, out)
    if p.target_time is not None:
        _message(b"\x52", timestamp_bytes(p.target_time), out)
    _message(b"\x5a", struct_bytes(p.metadata), out)
    if p.create_time is not None:
        _message(b"\x62", _create_time(p.create_time), out)
    return b"".join(out)


def repeated(tag: bytes, items: list[bytes]) -> bytes:
    """The wire bytes of a repeated message field holding ``items`` (each serialised)."""
    return b"".join([b for data in items for b in (tag, varint(len(data)), data)])
