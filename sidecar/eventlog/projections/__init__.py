"""The read models of the event log: pure folds of stored events, and what keeps them current.

- ``base``: the ``Projection`` every read model is, and its JSON state;
- ``breakers`` (state, transitions, open time, recovery per breaker) with ``breaker_views``
  (the per-upstream answers), ``endpoints`` (ejections), ``shedding`` (load-shedding periods)
  and ``counts`` (events per type, unknown enum values);
- ``runner``: ``ProjectionRunner`` folds the log from checkpoints, and ``rebuild``;
- ``follower``: ``ProjectionFollower``, the server's background task over the runner.

Names load on first use (``sidecar.eventlog._lazy``): the follower needs the retention package,
which needs the runner.
"""

from sidecar.eventlog import _lazy

_EXPORTS = {
    "base": ("CountEntry", "Key", "Projection"),
    "breakers": (
        "BreakerStatusProjection",
        "OpenTimeProjection",
        "RecoveryProjection",
        "TransitionCountsProjection",
        "default_projections",
    ),
    "breaker_views": ("BreakerViews", "InstanceStatus", "UpstreamStatus"),
    "counts": ("EventCountsProjection", "UnknownValuesProjection"),
    "endpoints": ("EndpointEjectionsProjection", "EndpointViews"),
    "shedding": ("SheddingPeriodsProjection", "SheddingViews"),
    "runner": ("ProjectionRunner", "rebuild"),
    "follower": ("ProjectionFollower", "server_projections"),
}

__all__ = _lazy.public_names(_EXPORTS)
__getattr__ = _lazy.loader(__name__, _EXPORTS)
