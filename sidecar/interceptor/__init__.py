"""Library mode: the sidecar's breakers as in-process gRPC client interceptors.

For apps that prefer no extra hop: the same config, the same breakers, the same admission
(breaker, then ``max_concurrent_requests``), the same outcome classification and the same
default deadline (``timeout_ms``) as the proxy, applied inside the app's own channel. All of it
comes from :mod:`sidecar.protection.guard`; nothing is re-implemented here.

Example (grpc.aio)::

    protection = Protection(load_config("sidecar.yaml"))
    channel = grpc.aio.insecure_channel("payments:50051",
                                        interceptors=protection.aio_interceptors())

Example (sync grpc)::

    channel = grpc.intercept_channel(grpc.insecure_channel("payments:50051"),
                                     *protection.sync_interceptors())

Which breaker guards a call: the upstream whose route (longest method-path prefix) matches the
method, as in the proxy, or the one named by ``aio_interceptors(upstream="payments")`` for a
channel that only talks to that upstream. A method no route matches passes through untouched.

Rejections look like the proxy's: a ``grpc.RpcError`` (``AioRpcError`` in aio) with status
UNAVAILABLE and trailing metadata ``x-sidecar-breaker: open``, ``x-sidecar-upstream``,
``x-sidecar-retry-after-ms``; RESOURCE_EXHAUSTED with ``x-sidecar-overflow: true`` over the
limit; a fixed-status fallback answers with its status. A fallback to another *upstream* needs
the proxy (an interceptor has no channel to it): in library mode such a call is rejected.

Endpoints: library mode guards the calls of a channel the app dialled itself, so everything
about endpoints (several addresses, discovery, per-call balancing, outlier ejection) needs the
proxy; the ``endpoints``, ``discovery``, ``balancer`` and ``outlier_detection`` keys are ignored
here (gRPC's own ``round_robin`` policy over a ``dns:///`` target spreads calls over replicas).

Streams: duration is the time to the first response message the caller reads (or to the end
when none), failure is the final status, as documented in :mod:`sidecar.protection.guard`. A call
the caller cancels counts nothing.

Threading: the aio interceptors run on the channel's event loop; the sync ones in the calling
thread, and their outcome callbacks in grpc's threads. Both only do O(1), non-blocking work.

Layout: :mod:`._protection` builds the guards from the config (:class:`Protection`),
:mod:`._decide` routes and admits one call through :mod:`sidecar.protection`, :mod:`._aio` and
:mod:`._sync` are the interceptors of each grpc API.
"""

from sidecar.interceptor._protection import Protection

__all__ = ["Protection"]
