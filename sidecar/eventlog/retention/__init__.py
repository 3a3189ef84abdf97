"""Retention: deleting a stream's oldest events without losing what the log proves or counts.

- ``policy``: ``RetentionPolicy``, which of a stream's oldest events may go (pure);
- ``base``: the projection snapshots a cut log's totals come from;
- ``job``: ``RetentionJob``, the server's background cut, and its metrics.

What a cut leaves behind is the port's (``sidecar.eventlog.port.anchors``); each adapter cuts
in its own way (``sqlite.retention``, ``nats.retention``). Names load on first use
(``sidecar.eventlog._lazy``): the server settings import the policy, the job needs the
projections.
"""

from sidecar.eventlog import _lazy

_EXPORTS = {
    "RetentionPolicy": "policy",
    "last_deletable": "policy",
    "RetentionStart": "base",
    "resume_past_anchors": "base",
    "save_base": "base",
    "RetentionCollector": "job",
    "RetentionJob": "job",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    return _lazy.load(__name__, _EXPORTS, name)
