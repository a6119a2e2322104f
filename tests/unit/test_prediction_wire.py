"""prediction_bytes: the wire bytes reads answer with are the message the API promises."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from predictstore.domain.predictions import Forecast, Prediction
from predictstore.transport.wire.convert import prediction_to_proto
from predictstore.transport.wire.prediction_wire import prediction_bytes, repeated
from predictstore.v1 import prediction_service_pb2 as pb

texts = st.text(max_size=300)
numbers = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
predictions = st.builds(
    Prediction,
    prediction_id=texts,
    user_id=texts,
    context=texts,
    prediction_type=texts,
    payload=st.dictionaries(texts, json_values, max_size=5),
    confidence=st.none() | numbers,
    forecast=st.none() | st.builds(Forecast, numbers, numbers, numbers),
    model_name=texts,
    model_version=texts,
    target_time=st.none() | times,
    metadata=st.dictionaries(texts, json_values, max_size=5),
    create_time=st.none() | times,
)


@given(predictions)
def test_prediction_bytes_parse_to_the_message_prediction_to_proto_builds(p: Prediction) -> None:
    assert pb.Prediction.FromString(prediction_bytes(p)) == prediction_to_proto(p)


@given(st.lists(predictions, max_size=3))
def test_repeated_frames_the_predictions_of_a_response(items: list[Prediction]) -> None:
    response = pb.ListPredictionsResponse.FromString(
        repeated(b"\x0a", [prediction_bytes(p) for p in items])
    )
    assert list(response.predictions) == [prediction_to_proto(p) for p in items]
