"""google.protobuf.Struct straight to JSON text, read from the Struct's wire bytes.

The bulk write path turns every payload and metadata Struct into the JSON text that
the size check measures and COPY stores. Through the protobuf API that costs a Python
wrapper per map, entry and value (about 0.5-1 us each, some 13 us for a small payload
and metadata), and json_format.MessageToDict about 20 us a Struct. The Struct's
serialised bytes come from upb, so they are well formed; one pass over them writes the
JSON as it goes, with no intermediate dict: about a third of the cost.

The text is what ``json.dumps(MessageToDict(s), separators=(",", ":"),
ensure_ascii=False)`` gives (key order aside, which jsonb does not keep anyway). NaN and
infinities have no JSON form: NotJson, as MessageToDict raises ValueError.
"""

from __future__ import annotations

import struct
from json.encoder import encode_basestring

from google.protobuf import struct_pb2

_double = struct.Struct("<d").unpack_from

# Wire tags (field number << 3 | wire type) of the messages of struct.proto.
_ENTRY = 0x0A  # Struct.fields (map entry), ListValue.values, entry key: field 1, LEN
_ENTRY_VALUE = 0x12  # map entry value: field 2, LEN
_NULL, _NUMBER, _STRING, _BOOL, _STRUCT, _LIST = 0x08, 0x11, 0x1A, 0x20, 0x2A, 0x32


class NotJson(ValueError):
    """The Struct holds a NaN or an infinite number, which JSON cannot represent."""


def struct_json(message: struct_pb2.Struct) -> str:
    """``message`` as compact JSON text (an object)."""
    data = message.SerializeToString()
    out: list[str] = []
    _object(data, 0, len(data), out)
    return "".join(out)


def _varint(data: bytes, i: int) -> tuple[int, int]:
    byte = data[i]
    if byte < 0x80:
        return byte, i + 1
    result, shift = byte & 0x7F, 7
    i += 1
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _skip(data: bytes, i: int, tag: int) -> int:
    """Past the value of an unknown field (upb keeps unknown fields when it serialises)."""
    kind = tag & 7
    if kind == 0:
        return _varint(data, i)[1]
    if kind == 1:
        return i + 8
    if kind == 2:
        size, i = _varint(data, i)
        return i + size
    if kind == 5:
        return i + 4
    raise NotJson("unsupported wire type")  # groups: never written by upb for struct.proto


def _object(data: bytes, i: int, end: int, out: list[str]) -> None:
    out.append("{")
    first = True
    while i < end:
        tag = data[i]
        if tag != _ENTRY:
            tag, i = _varint(data, i)
            i = _skip(data, i, tag)
            continue
        size = data[i + 1]
        i += 2
        if size >= 0x80:
            size, i = _varint(data, i - 1)
        entry_end = i + size
        key = ""
        value_start = value_end = -1
        while i < entry_end:
            tag = data[i]
            if tag in (_ENTRY, _ENTRY_VALUE):
                size = data[i + 1]
                i += 2
                if size >= 0x80:
                    size, i = _varint(data, i - 1)
                if tag == _ENTRY:
                    key = data[i : i + size].decode()
                else:
                    value_start, value_end = i, i + size
                i += size
            else:
                tag, i = _varint(data, i)
                i = _skip(data, i, tag)
        if first:
            first = False
        else:
            out.append(",")
        out.append(encode_basestring(key))
        out.append(":")
        if value_start < 0:
            out.append("null")
        else:
            _value(data, value_start, value_end, out)
    out.append("}")


def _value(data: bytes, i: int, end: int, out: list[str]) -> None:
    """One Value: the last kind set wins (protobuf's rule for a oneof); none is null."""
    kind = 0
    start = stop = 0
    number = 0.0
    flag = 0
    while i < end:
        tag = data[i]
        i += 1
        if tag == _NUMBER:
            kind, number = tag, _double(data, i)[0]
            i += 8
        elif tag in (_BOOL, _NULL):
            kind = tag
            flag, i = _varint(data, i)
        elif tag in (_STRING, _STRUCT, _LIST):
            kind = tag
            size, i = _varint(data, i)
            start, stop = i, i + size
            i = stop
        else:
            tag, i = _varint(data, i - 1)
            i = _skip(data, i, tag)
    if kind == _STRING:
        out.append(encode_basestring(data[start:stop].decode()))
    elif kind == _NUMBER:
        if number - number != 0.0:  # NaN or an infinity
            raise NotJson("NaN or infinite number")
        out.append(repr(number))
    elif kind == _STRUCT:
        _object(data, start, stop, out)
    elif kind == _LIST:
        _list(data, start, stop, out)
    elif kind == _BOOL:
        out.append("true" if flag else "false")
    else:
        out.append("null")


def _list(data: bytes, i: int, end: int, out: list[str]) -> None:
    out.append("[")
    first = True
    while i < end:
        tag = data[i]
        if tag != _ENTRY:
            tag, i = _varint(data, i)
            i = _skip(data, i, tag)
            continue
        size = data[i + 1]
        i += 2
        if size >= 0x80:
            size, i = _varint(data, i - 1)
        if first:
            first = False
        else:
            out.append(",")
        _value(data, i, i + size, out)
        i += size
    out.append("]")


# -- the other way: JSON values to a Struct's wire bytes --------------------------------

_pack_double = struct.Struct("<d").pack


# Length varints of up to 127 (most keys, strings and small values): one lookup.
_SMALL = [bytes((n,)) for n in range(0x80)]


def _size(n: int) -> bytes:
    """A length as a varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def struct_bytes(value: dict[str, object]) -> bytes:
    """The wire bytes of the Struct holding ``value`` (a decoded JSON object).

    ``Struct.FromString(struct_bytes(v))`` equals a Struct filled by ``update(v)``, which
    creates a wrapper per value in Python; parsing bytes runs in C. Reads (GetPrediction,
    ListPredictions) build their Structs this way. Strings and numbers, the usual values,
    are written inline: a call per value is a good part of the cost.
    """
    out: list[bytes] = []
    for key, item in value.items():
        k = key.encode()
        t = type(item)
        if t is str:
            data = item.encode()  # type: ignore[attr-defined]
            v = b"\x1a" + _size(len(data)) + data
        elif t is float or t is int:
            v = b"\x11" + _pack_double(item)
        else:
            v = _value_bytes(item)
        entry = b"\x0a" + _size(len(k)) + k + b"\x12" + _size(len(v)) + v
        out += (b"\x0a", _size(len(entry)), entry)
    return b"".join(out)


def _value_bytes(item: object) -> bytes:
    if isinstance(item, str):
        data = item.encode()
        return b"\x1a" + _size(len(data)) + data
    if isinstance(item, bool):  # before int: bool is an int
        return b"\x20\x01" if item else b"\x20\x00"
    if isinstance(item, int | float):
        return b"\x11" + _pack_double(float(item))
    if item is None:
        return b"\x08\x00"
    if isinstance(item, dict):
        data = struct_bytes(item)
        return b"\x2a" + _size(len(data)) + data
    if isinstance(item, list | tuple):
        out: list[bytes] = []
        for v in item:
            if type(v) is float:  # lists of scores: the common case
                out += (b"\x0a\x09\x11", _pack_double(v))
            else:
                b = _value_bytes(v)
                out += (b"\x0a", _size(len(b)), b)
        data = b"".join(out)
        return b"\x32" + _size(len(data)) + data
    raise TypeError(f"not a JSON value: {type(item).__name__}")
