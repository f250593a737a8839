"""API-key authentication as a server interceptor (off when no keys are configured)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import grpc

# Health checks and reflection stay open so probes and grpcurl work without a key.
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Accepts ``x-api-key: KEY`` or ``authorization: Bearer KEY`` metadata."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]

    def _allowed(self, metadata: Sequence[tuple[str, str | bytes]]) -> bool:
        for key, value in metadata:
            text = value.decode() if isinstance(value, bytes) else value
            if key == "authorization" and text.lower().startswith("bearer "):
                text = text[7:]
            elif key != "x-api-key":
                continue
            if any(hmac.compare_digest(text.strip().encode(), k) for k in self._keys):
                return True
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not self._keys or handler_call_details.method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        if self._allowed(handler_call_details.invocation_metadata or ()):
            return await continuation(handler_call_details)
        return _deny_handler()


def _deny_handler() -> grpc.RpcMethodHandler:
    async def deny(request, context: grpc.aio.ServicerContext):  # noqa: ANN001, ANN202
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or unknown API key: send it as 'x-api-key' metadata (trainer-agent --api-key KEY)",
        )

    return grpc.unary_unary_rpc_method_handler(deny)
