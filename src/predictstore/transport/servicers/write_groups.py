"""The write groups of one client stream in flight: BatchCreatePredictions and
BatchRecordOutcomes write a group of items while they decode the next, and may write two
groups at once, each on its own connection."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Set
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    ids: Set[str]
    concurrent: bool


class GroupsInFlight(Generic[T]):
    """Groups being written, oldest first, each with the ids it holds. A group waits for
    every earlier one that shares an id with it, so it is judged against what they
    stored and two transactions never write one id."""

    def __init__(self) -> None:
        self._flights: list[_Flight[T]] = []

    def __bool__(self) -> bool:
        return bool(self._flights)

    def start(
        self, write: Coroutine[Any, Any, T], ids: Set[str], *, concurrent: bool = True
    ) -> None:
        """Write a group (``ids`` its ids); ``concurrent``: it may write beside others."""
        self._flights.append(_Flight(asyncio.create_task(write), ids, concurrent))

    @staticmethod
    def room_beside(most: int, spare_connections: int) -> int:
        """How many groups a new one may write beside: at most ``most``, and only so many
        that, with ``spare_connections`` of the pool free now, one is left for other
        calls even if each group in flight has yet to take its connection. A stream
        always gets one."""
        return max(0, min(most, spare_connections - 2))

    def all_concurrent(self) -> bool:
        """Whether every group in flight may write beside another."""
        return all(f.concurrent for f in self._flights)

    async def settle(self, keep: int = 0, ids: Set[str] = frozenset()) -> list[T]:
        """Wait for groups, oldest first, until at most ``keep`` are left and none of
        them shares an id with ``ids``; what the groups waited for returned."""
        results = []
        while self._flights and (
            len(self._flights) > keep or any(not ids.isdisjoint(f.ids) for f in self._flights)
        ):
            results.append(await self._flights.pop(0).task)
        return results

    async def cancel(self) -> None:
        """The stream failed: cancel every group in flight (each commits all of its group
        or nothing) and wait for them to end."""
        tasks = [f.task for f in self._flights]
        self._flights = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
