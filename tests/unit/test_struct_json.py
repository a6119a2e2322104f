"""Struct to JSON text from the wire bytes, against protobuf's own json_format."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from predictstore.transport.wire.struct_json import NotJson, struct_bytes, struct_json

texts = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def struct(value: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


@given(st.dictionaries(texts, json_values, max_size=6))
def test_text_holds_what_json_format_gives(value: dict[str, object]) -> None:
    s = struct(value)
    text = struct_json(s)
    assert json.loads(text) == json_format.MessageToDict(s)
    # compact and unescaped like the stored form: as long as json.dumps of the dict
    stored = json.dumps(json_format.MessageToDict(s), separators=(",", ":"), ensure_ascii=False)
    assert len(text) == len(stored)


def test_empty_and_unset_values_are_null() -> None:
    s = struct_pb2.Struct()
    s.fields["unset"].Clear()
    s.fields["list"].list_value.values.add()
    assert json.loads(struct_json(s)) == {"unset": None, "list": [None]}
    assert struct_json(struct_pb2.Struct()) == "{}"


def test_long_strings_and_deep_nesting_keep_their_content() -> None:
    value = {"k" * 300: "é" * 5000, "deep": {"a": {"b": {"c": [[[1.5, "x"]]]}}}}
    assert json.loads(struct_json(struct(value))) == value


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_have_no_json(number: float) -> None:
    with pytest.raises(NotJson):
        struct_json(struct({"a": {"b": [1, number]}}))


def test_unknown_fields_are_skipped() -> None:
    s = struct({"a": 1})
    # field 15 (varint) in the Struct, then field 14 (LEN) inside the entry's Value
    data = s.SerializeToString() + b"\x78\x05"
    parsed = struct_pb2.Struct.FromString(data)
    value = struct_pb2.Value.FromString(s.fields["a"].SerializeToString() + b"\x72\x01z")
    parsed.fields["b"].CopyFrom(value)
    assert json.loads(struct_json(parsed)) == {"a": 1, "b": 1}


@given(st.dictionaries(texts, json_values, max_size=6))
def test_struct_bytes_make_the_struct_update_makes(value: dict[str, object]) -> None:
    assert struct_pb2.Struct.FromString(struct_bytes(value)) == struct(value)


def test_struct_bytes_take_ints_long_strings_and_tuples() -> None:
    value = {"n": 3, "big": 2**60, "s": "é" * 300, "t": (1, "a"), "b": False}
    assert struct_pb2.Struct.FromString(struct_bytes(value)) == struct(value)
