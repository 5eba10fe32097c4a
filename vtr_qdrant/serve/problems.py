"""THE mapping from a failure to an HTTP error: ``{"error": {"type": ..., "message": ...}}``.

Every error response of the service is built by :func:`error_response`, and every exception a
route can meet is classified by :func:`as_api_error`: the message says what was wrong and how to
fix it, and never carries a stack trace or a file path of the server.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ConfigError, InvalidInputError, StorageError, VtrError

__all__ = ["ApiError", "error_body", "error_response", "as_api_error", "is_unavailable", "STATUS_TYPES"]

log = logging.getLogger(__name__)

#: the error ``type`` of a status when nothing more precise is known
STATUS_TYPES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    413: "payload_too_large", 416: "range_not_satisfiable", 422: "validation_error", 500: "internal_error",
    503: "backend_unavailable",
}


class ApiError(VtrError):
    """An error answered to the client as it is.

    Attributes:
        status: the HTTP status.
        type: a short machine-readable tag (``"invalid_query"``, ``"video_not_found"``...).
        message: what was wrong and how to fix it.
        headers: extra response headers (``Content-Range`` of a 416...).
    """

    def __init__(self, status: int, type: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers or {}


def error_body(type: str, message: str) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": {"type": type, "message": message}}


def error_response(err: ApiError) -> Any:
    """A ``JSONResponse`` for ``err``."""
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(err.type, err.message), status_code=err.status, headers=err.headers)


def is_unavailable(e: BaseException) -> bool:
    """Whether ``e`` means the vector store cannot be reached or is failing (answer 503, retry later)."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(e, ResponseHandlingException | StorageError | ConnectionError | TimeoutError):
        return True
    if isinstance(e, UnexpectedResponse):
        return e.status_code is None or e.status_code >= 500
    try:
        import grpc  # the server's gRPC transport, when the client was built with prefer_grpc

        return isinstance(e, grpc.RpcError)
    except ImportError:
        return False


def as_api_error(e: BaseException, *, where: str) -> ApiError:
    """Classify an exception raised while serving ``where`` (a short description for the log)."""
    if isinstance(e, ApiError):
        return e
    if is_unavailable(e):
        log.warning("%s: the vector store is unavailable: %s: %s", where, type(e).__name__, e)
        return ApiError(503, "backend_unavailable", "the vector store is unreachable or failing; retry later")
    if isinstance(e, InvalidInputError | ConfigError):
        return ApiError(400, "invalid_request", str(e))
    log.error("%s failed", where, exc_info=e)
    return ApiError(500, "internal_error", "the server failed to answer this request; the server log has the details")
