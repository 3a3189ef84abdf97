"""How the adapter reads JetStream's failures: retry (after a pause), plan again, or give up.

``StalePlan`` and ``TransientFailure`` never leave the adapter: an append that meets them
plans again (within ``append_retry_s``); what is left is a ``StoreError``.
"""

from __future__ import annotations

from typing import Final

import nats.errors
import nats.js.errors

RETRY_BACKOFF_S: Final = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Pauses between attempts (the last one repeats)."""

# JetStream API error codes this adapter reacts to.
ERR_WRONG_LAST_SEQUENCE: Final = 10071
ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT: Final = 10164
"""Clustered: another batch expecting the same subject sequence is still being proposed."""
ERR_MAX_MSGS_PER_SUBJECT: Final = 10077
ERR_NO_MESSAGE_FOUND: Final = 10037
STALE_ERRORS: Final = frozenset(
    {ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT, ERR_MAX_MSGS_PER_SUBJECT}
)

CONNECTION_ERRORS: Final = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)
"""Client-side failures after which the outcome of a request is unknown (retry-able)."""

SETUP_RETRYABLE: Final = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServerError,
    nats.js.errors.ServiceUnavailableError,
)
"""Failures while creating the stream or bucket that a later attempt may not meet."""


class StalePlan(Exception):
    """The server refused the batch because a head moved: plan again."""


class TransientFailure(Exception):
    """No leader, timeout, reconnecting...: the outcome is unknown; plan again after a pause."""
