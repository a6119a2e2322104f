"""transport.wire.buckets against upb: the numpy-encoded bytes parse into the messages
protobuf itself builds field by field, over the edge cases of every field."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from predictstore.storage.metrics_read import BucketBatch
from predictstore.transport.wire.buckets import encode_buckets
from predictstore.v1 import metrics_service_pb2 as pb

KEYS = [
    ("latency_ms", ""),
    ("cpu", "eu-west"),
    ("ü" * 70, "long value " * 12),  # 140-byte name, 132-byte value: two-byte lengths
    ("m" * 9000, "v"),  # a 9000-byte name: a two-byte length, a bucket over 16 KiB
]
STARTS = [0, 1, -1, 999_999, 1_000_000, -1_500_000, 1_761_000_000_123_456, -(2**62), 2**62]
COUNTS = [0, 1, 127, 128, 300, 2**40, 2**63 - 1]
VALUES = [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, math.nan]


def _reference(
    batch: BucketBatch, fields: dict[str, bool], percentiles: tuple[float, ...]
) -> pb.AggregateMetricsResponse:
    """What the encoding must equal: each bucket built field by field through upb."""
    frame = pb.AggregateMetricsResponse()
    for i in range(len(batch)):
        item = frame.buckets.add()
        seconds, micros = divmod(int(batch.starts_us[i]), 1_000_000)
        item.bucket_start_time.seconds = seconds
        item.bucket_start_time.nanos = micros * 1000
        item.metric_name, item.group_value = batch.keys[batch.groups[i]]
        count = int(batch.counts[i])
        if not count:
            continue
        item.count = count
        total = float(batch.sums[i])
        if fields["sums"]:
            item.sum = total
        if fields["avgs"]:
            item.avg = total / count
        if fields["mins"]:
            item.min = float(batch.mins[i])
        if fields["maxs"]:
            item.max = float(batch.maxs[i])
        assert batch.percentiles is not None or not percentiles
        for j, q in enumerate(percentiles):
            item.percentiles.add(percentile=q, value=float(batch.percentiles[i, j]))  # type: ignore[index]
    return frame


def _batch(rng: random.Random, n: int, percentiles: int) -> BucketBatch:
    groups = sorted(rng.randrange(len(KEYS)) for _ in range(n))
    counts = [rng.choice(COUNTS) for _ in range(n)]

    def values() -> list[float]:
        return [
            rng.choice(VALUES) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6) for _ in range(n)
        ]

    pct = None
    if percentiles:
        pct = np.array([values() for _ in range(percentiles)], dtype=np.float64).T.copy()
    return BucketBatch(
        KEYS,
        np.array(groups, dtype=np.int64),
        np.array([rng.choice(STARTS) + rng.choice([0, 7]) for _ in range(n)], dtype=np.int64),
        np.array(counts, dtype=np.int64),
        np.array(values(), dtype=np.float64),
        np.array(values(), dtype=np.float64),
        np.array(values(), dtype=np.float64),
        pct,
    )


@pytest.mark.parametrize("percentiles", [(), (0.5,), (0.5, 0.9, 0.95, 0.99)])
@pytest.mark.parametrize(
    "wanted", [w for w in itertools.product([True, False], repeat=4) if any(w)]
)
def test_encoded_buckets_parse_into_what_upb_builds(
    percentiles: tuple[float, ...], wanted: tuple[bool, ...]
) -> None:
    rng = random.Random(hash((percentiles, wanted)))
    fields = dict(zip(("sums", "avgs", "mins", "maxs"), wanted, strict=True))
    batch = _batch(rng, 400, len(percentiles))
    encoded = encode_buckets(batch, percentiles=percentiles, **fields)
    parsed = pb.AggregateMetricsResponse.FromString(encoded.data.tobytes())
    expected = _reference(batch, fields, percentiles)
    # serialised, so that NaN compares equal to itself
    assert parsed.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
    # every bucket's own bytes end where ends says, and parse alone
    starts = np.concatenate([[0], encoded.ends[:-1]])
    for i in rng.sample(range(len(batch)), 20):
        one = pb.AggregateMetricsResponse.FromString(
            encoded.data[starts[i] : encoded.ends[i]].tobytes()
        )
        assert one.buckets[0].SerializeToString(deterministic=True) == expected.buckets[
            i
        ].SerializeToString(deterministic=True)


def test_an_empty_batch_encodes_to_nothing() -> None:
    batch = _batch(random.Random(1), 0, 0)
    encoded = encode_buckets(batch, sums=True, avgs=True, mins=True, maxs=True)
    assert len(encoded.data) == 0
    assert len(encoded.ends) == 0
