"""The guards of library mode, built (and reloaded) from a :class:`~sidecar.config.SidecarConfig`
the way the proxy builds its upstreams', so breaker state survives a reload the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from sidecar.breaker import BreakerListener
from sidecar.config import SidecarConfig
from sidecar.interceptor._aio import AioStreamStream, AioStreamUnary, AioUnaryStream, AioUnaryUnary
from sidecar.interceptor._decide import Protected
from sidecar.interceptor._sync import SyncInterceptor
from sidecar.protection import BreakerRegistry, GuardSettings, RouteTable, UpstreamGuard

__all__ = ["Protection"]


class Protection:
    """Breakers and limits for in-process calls, built from a :class:`SidecarConfig`.

    ``breakers`` is the same kind of registry the proxy uses (listeners for metrics or events
    attach there). :meth:`reload` applies a new config keeping breaker state, like SIGHUP does
    for the proxy.
    """

    def __init__(self, config: SidecarConfig,
                 breaker_listeners: Sequence[BreakerListener] = ()) -> None:
        self.breakers = BreakerRegistry(breaker_listeners)
        self._upstreams: dict[str, Protected] = {}
        self._routes: RouteTable[Protected] = RouteTable({})
        self.reload(config)

    def reload(self, config: SidecarConfig) -> None:
        upstreams: dict[str, Protected] = {}
        for name, upstream in config.upstreams.items():
            settings = GuardSettings.from_config(upstream)
            current = self._upstreams.get(name)
            if current is not None and current.guard.settings.per_method == upstream.per_method:
                current.guard.reconfigure(settings)
                current.timeout_s = upstream.timeout_ms / 1000.0
                upstreams[name] = current
            else:
                if current is not None:
                    self.breakers.discard(current.guard.breaker_names())
                upstreams[name] = Protected(UpstreamGuard(name, settings, self.breakers),
                                             upstream.timeout_ms / 1000.0)
        for name, gone in self._upstreams.items():
            if name not in upstreams:
                self.breakers.discard(gone.guard.breaker_names())
        self._upstreams = upstreams
        self._routes = RouteTable({route: upstreams[name]
                                   for name, upstream in config.upstreams.items()
                                   for route in upstream.routes})

    def _target(self, method: str, pinned: str | None) -> Protected | None:
        if pinned is not None:
            return self._upstreams.get(pinned)
        return self._routes.match(method)

    def aio_interceptors(self, upstream: str | None = None) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for ``grpc.aio`` channels, one per call shape (pass all four)."""
        self._check(upstream)
        return [AioUnaryUnary(self, upstream), AioUnaryStream(self, upstream),
                AioStreamUnary(self, upstream), AioStreamStream(self, upstream)]

    def sync_interceptors(self, upstream: str | None = None) -> list[Any]:
        """Interceptors for ``grpc.intercept_channel`` (all four call shapes in one object)."""
        self._check(upstream)
        return [SyncInterceptor(self, upstream)]

    def _check(self, upstream: str | None) -> None:
        if upstream is not None and upstream not in self._upstreams:
            raise ValueError(f"upstream: no upstream named {upstream!r} in the config; "
                             f"known: {', '.join(sorted(self._upstreams))}")
