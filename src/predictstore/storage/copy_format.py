"""PostgreSQL's binary COPY format, as every bulk path writes or reads it: the file
header (signature, flags, no extension), the trailer (a field count of -1), and the
epoch of its timestamps (int8 microseconds since 2000-01-01 UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# PG_EPOCH in microseconds since the Unix epoch (946,684,800 s).
PG_EPOCH_US = (PG_EPOCH - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
