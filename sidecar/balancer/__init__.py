"""sidecar.balancer: endpoints of one upstream, the per-call choice, outlier ejection.

Pure logic (stdlib only, no I/O, clocks and randomness injected; docs/endpoints.md).

Public surface::

    Balancer            update_endpoints(), pick(avoid), start(), finish(), cancel(),
                        reconfigure(), endpoints(), views(), active_count(), ejected_count()
    Endpoint            address, target (the caller's object), in_flight, ejected, in_set
    BalancerSettings    policy (p2c_ewma | round_robin | least_request), EWMA decay, default RTT
    OutlierSettings     consecutive failures / failure rate, ejection times, percent limit
    EndpointListener    on_ejected(Ejection), on_returned(Return),
                        on_endpoints_changed(EndpointsChange)
    EndpointView        one endpoint for the admin API
    PeakEwma            the latency estimate, usable on its own

Example::

    from sidecar.balancer import Balancer, BalancerSettings, OutlierSettings

    balancer = Balancer("payments", BalancerSettings(), OutlierSettings())
    balancer.update_endpoints({"10.0.0.1:50051": conn1, "10.0.0.2:50051": conn2}, "endpoints")
    endpoint = balancer.pick()
    if endpoint is not None:
        started = balancer.start(endpoint)
        balancer.finish(endpoint, started, failed=False)
"""

from sidecar.balancer._balancer import Balancer
from sidecar.balancer._endpoint import Endpoint
from sidecar.balancer._load import PeakEwma
from sidecar.balancer._settings import BalancerSettings, OutlierSettings, Policy
from sidecar.balancer._types import (
    Ejection,
    EndpointListener,
    EndpointsChange,
    EndpointView,
    Return,
)

__all__ = [
    "Balancer",
    "BalancerSettings",
    "Ejection",
    "Endpoint",
    "EndpointListener",
    "EndpointView",
    "EndpointsChange",
    "OutlierSettings",
    "PeakEwma",
    "Policy",
    "Return",
]
