"""grpc.health.v1: SERVING while the database answers, NOT_SERVING while it does not."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health
from grpc_health.v1 import health_pb2 as health_pb

log = logging.getLogger(__name__)

SERVING = health_pb.HealthCheckResponse.SERVING
NOT_SERVING = health_pb.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Probes the database periodically and sets the overall and per-service status."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        probe: Callable[[], Awaitable[bool]],
        interval_s: float,
    ) -> None:
        self.servicer = servicer
        self.services = ["", *services]
        self.probe = probe
        self.interval_s = interval_s
        self.serving: bool | None = None

    async def set_all(self, serving: bool) -> None:
        for service in self.services:
            await self.servicer.set(service, SERVING if serving else NOT_SERVING)
        if serving != self.serving:
            log.info(
                "health changed",
                extra={"action": "health", "status": "SERVING" if serving else "NOT_SERVING"},
            )
        self.serving = serving

    async def check_once(self) -> bool:
        serving = await self.probe()
        await self.set_all(serving)
        return serving

    async def run(self) -> None:
        """Probe forever; cancel the task to stop."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    async def shutdown(self) -> None:
        """NOT_SERVING for good: the server is going away."""
        await self.servicer.enter_graceful_shutdown()
