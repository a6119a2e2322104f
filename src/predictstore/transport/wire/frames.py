"""Frames of streaming reads: bounded in items and in bytes, whatever the range."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Generic, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
T = TypeVar("T")
R = TypeVar("R")

# Per-item overhead of a repeated message field on the wire (tag + length varint).
ITEM_OVERHEAD = 6


class FrameBuilder(Generic[M]):
    """Groups encoded items into frames of at most ``max_items`` and about ``max_bytes``.

    A frame closes before an item that would push it past ``max_bytes``, so every frame
    stays under the limit unless one item alone exceeds it.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: list[M] = []
        self._bytes = 0

    def add(self, items: Iterable[M]) -> Iterator[list[M]]:
        """Add items; yields every frame that became full."""
        for item in items:
            size = item.ByteSize() + ITEM_OVERHEAD
            if self._items and (
                len(self._items) >= self.max_items or self._bytes + size > self.max_bytes
            ):
                yield self._take()
            self._items.append(item)
            self._bytes += size

    def flush(self) -> list[M]:
        """The last, partial frame (possibly empty)."""
        return self._take()

    def _take(self) -> list[M]:
        items, self._items, self._bytes = self._items, [], 0
        return items


async def framed(
    batches: AsyncIterator[list[T]],
    to_proto: Callable[[T], M],
    frame: Callable[[list[M]], R],
    max_items: int,
    max_bytes: int,
) -> AsyncIterator[R]:
    """The responses of a streaming read: rows from ``batches`` (a cursor's fetches)
    converted, grouped into bounded frames, each made a response by ``frame``."""
    builder: FrameBuilder[M] = FrameBuilder(max_items, max_bytes)
    async for rows in batches:
        for items in builder.add(to_proto(row) for row in rows):
            yield frame(items)
    if items := builder.flush():
        yield frame(items)


async def keyed_frames(
    batches: AsyncIterator[list[tuple[T, M]]], max_items: int, max_bytes: int
) -> AsyncIterator[tuple[list[M], T]]:
    """Bounded frames of (position, item) batches, each with the position of its last
    item, from which a resume token is made."""
    builder: FrameBuilder[M] = FrameBuilder(max_items, max_bytes)
    positions: dict[int, T] = {}  # the positions of the items not yet in a frame
    async for batch in batches:
        positions.update((id(item), position) for position, item in batch)
        for items in builder.add(item for _, item in batch):
            yield items, positions[id(items[-1])]
            for item in items:
                del positions[id(item)]
    if items := builder.flush():
        yield items, positions[id(items[-1])]


async def byte_frames(
    batches: AsyncIterator[list[T]], encode: Callable[[T], bytes], max_items: int, max_bytes: int
) -> AsyncIterator[tuple[list[bytes], T]]:
    """framed for items encoded straight to wire bytes (see prediction_wire): bounded
    frames of the encoded items, each with the last row it holds, from which a resume
    token is made. The same bounds as FrameBuilder, measured on the bytes themselves."""
    items: list[bytes] = []
    size = 0
    last: T | None = None
    async for rows in batches:
        for row in rows:
            data = encode(row)
            n = len(data) + ITEM_OVERHEAD
            if items and (len(items) >= max_items or size + n > max_bytes):
                yield items, last  # type: ignore[misc]
                items, size = [], 0
            items.append(data)
            size += n
            last = row
    if items:
        yield items, last  # type: ignore[misc]
