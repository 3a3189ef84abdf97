"""sidecar.resilience: retries under a budget, hedging, and the adaptive concurrency limit.

Pure logic (stdlib only, no I/O, clocks and randomness injected), DESIGN section 3b. The
proxy's data path (:mod:`sidecar.proxy._forward`) and guard (:mod:`sidecar.proxy.guard`) call
it; telemetry and events hear about it through :class:`SheddingListener` and the call scope.
"""

from sidecar.resilience._types import SheddingChange, SheddingListener, SheddingPhase

__all__ = ["SheddingChange", "SheddingListener", "SheddingPhase"]
