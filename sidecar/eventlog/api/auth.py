"""Bearer-token access control for the event log's gRPC API, as one server interceptor.

When a token is configured, ``Append`` needs ``authorization: Bearer <token>`` metadata; with
``reads_require_token`` every other EventLog method does too. Health checks and reflection stay
open so probes and tooling work. A refused call ends with UNAUTHENTICATED before the handler
runs, so nothing is stored. The token is compared in constant time and never logged: neither
the configured one nor what a client sent.

Example::

    interceptor = BearerTokenInterceptor("s3cret", reads_require_token=False)
    server = grpc.aio.server(interceptors=[interceptor])
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import grpc

from sidecar.eventlog.settings import TOKEN_METADATA_KEY

SERVICE_PREFIX: Final = "/sidecar.v1.EventLog/"
WRITE_METHODS: Final = frozenset({f"{SERVICE_PREFIX}Append"})
READ_METHODS: Final = frozenset(
    f"{SERVICE_PREFIX}{name}"
    for name in (
        "ReadStream",
        "ReadAll",
        "Subscribe",
        "GetBreakerStatus",
        "ListBreakerStatus",
        "Verify",
    )
)
_BEARER_PREFIX: Final = "bearer "

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


def bearer_metadata(token: str | None) -> list[tuple[str, str]]:
    """Client side: the call metadata that carries ``token`` (empty when there is none)."""
    return [] if token is None else [(TOKEN_METADATA_KEY, f"Bearer {token}")]


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses protected EventLog calls that lack the configured bearer token.

    Runs on the server's event loop; does no I/O.
    """

    def __init__(self, token: str, *, reads_require_token: bool) -> None:
        if not token:
            raise ValueError("token: must not be empty")
        self._token = token.encode()
        self._protected = WRITE_METHODS | READ_METHODS if reads_require_token else WRITE_METHODS

    def __repr__(self) -> str:  # never show the token
        return f"BearerTokenInterceptor(protected={sorted(self._protected)})"

    def _problem(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """None when authorized, else why not (without echoing what was sent)."""
        values = [v for k, v in (metadata or ()) if k == TOKEN_METADATA_KEY]
        if not values:
            return f"missing '{TOKEN_METADATA_KEY}: Bearer <token>' metadata"
        value = values[0]
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if not text.lower().startswith(_BEARER_PREFIX):
            return f"'{TOKEN_METADATA_KEY}' metadata must be 'Bearer <token>'"
        sent = text[len(_BEARER_PREFIX) :].strip().encode()
        if not hmac.compare_digest(sent, self._token):
            return "bearer token is not valid"
        return None

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if method not in self._protected or handler is None:
            return handler
        problem = self._problem(handler_call_details.invocation_metadata)
        if problem is None:
            return handler
        return _refusing_handler(handler, f"{method.rsplit('/', 1)[-1]}: {problem}")


def _refusing_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
