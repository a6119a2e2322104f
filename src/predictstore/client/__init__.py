"""Python clients for predictstore; they need only grpc and the generated stubs.

- ``Client`` / ``SyncClient``: every service, with retries and resuming reads
  (``predictstore.client.services``); range reads as pyarrow Tables with the ``arrow``
  extra (``predictstore.client.arrow``).
- ``MetricsWriter`` / ``SyncMetricsWriter``: the exactly-once metrics producer
  (``predictstore.client.writer``).
- ``RetryPolicy`` and ``retry_delay_s``: when calls are retried
  (``predictstore.client.retry``).
"""

from predictstore.client.retry import RetryPolicy, retry_delay_s
from predictstore.client.services import Client, SyncClient
from predictstore.client.writer import (
    MetricsWriter,
    SyncMetricsWriter,
    WriterClosed,
    WriterStats,
)

__all__ = [
    "Client",
    "MetricsWriter",
    "RetryPolicy",
    "SyncClient",
    "SyncMetricsWriter",
    "WriterClosed",
    "WriterStats",
    "retry_delay_s",
]
