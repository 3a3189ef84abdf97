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
    "policy": ("RetentionPolicy", "last_deletable"),
    "base": ("RetentionStart", "resume_past_anchors", "save_base"),
    "job": ("RetentionCollector", "RetentionJob"),
}

__all__ = _lazy.public_names(_EXPORTS)
__getattr__ = _lazy.loader(__name__, _EXPORTS)
