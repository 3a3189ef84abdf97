"""The grpc.aio pass-through proxy: routing, raw-bytes forwarding, deadlines, breakers,
fallbacks, limits, the admin API (see :mod:`sidecar.proxy.app`)."""
