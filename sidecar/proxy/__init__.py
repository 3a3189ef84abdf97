"""The gRPC transport: the grpc.aio pass-through proxy (routing generations, raw-bytes
forwarding, deadlines, retries and hedges, upstream connections, discovery) and the admin API
(see :mod:`sidecar.proxy.app`). Breakers, limits and fallbacks are decided by the shared core,
:mod:`sidecar.protection`, which the in-process interceptors use too."""
