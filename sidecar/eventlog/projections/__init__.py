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
    "CountEntry": "base",
    "Key": "base",
    "Projection": "base",
    "BreakerStatusProjection": "breakers",
    "OpenTimeProjection": "breakers",
    "RecoveryProjection": "breakers",
    "TransitionCountsProjection": "breakers",
    "default_projections": "breakers",
    "BreakerViews": "breaker_views",
    "InstanceStatus": "breaker_views",
    "UpstreamStatus": "breaker_views",
    "EventCountsProjection": "counts",
    "UnknownValuesProjection": "counts",
    "EndpointEjectionsProjection": "endpoints",
    "EndpointViews": "endpoints",
    "SheddingPeriodsProjection": "shedding",
    "SheddingViews": "shedding",
    "ProjectionRunner": "runner",
    "rebuild": "runner",
    "ProjectionFollower": "follower",
    "server_projections": "follower",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    return _lazy.load(__name__, _EXPORTS, name)
