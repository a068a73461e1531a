"""The exceptions the SDK raises.

Every error the server reports has the envelope ``{"error": {"code", "message", "details"}}``;
the SDK turns it into one of these classes::

    SandboxAPIError                  (base; .status_code, .code, .message, .details, .response)
    ├── SandboxConnectionError       the server could not be reached
    ├── UnauthorizedError            401: missing, malformed, expired or wrongly signed token
    ├── SessionNotFoundError         404 session_not_found (or another tenant's session)
    ├── RateLimitError               429: .limit, .remaining, .reset, .retry_after
    └── SandboxOperationError        every other 4xx/5xx, by code (see ERROR_CODES):
        ├── InvalidRequestError      400 invalid_request
        ├── ForbiddenError           403 forbidden
        ├── NotFoundError            404 not_found, process_not_found, file_not_found,
        │                                image_not_found
        ├── ContextNotFoundError     404 context_not_found / storage_context_not_found
        ├── ConflictError            409 conflict
        ├── SessionPausedError       409 session_paused: resume the session first
        ├── NotSupportedError        409 not_supported: the server's runtime cannot do it
        ├── PayloadTooLargeError     413 payload_too_large
        ├── SandboxUnavailableError  502 sandbox_unavailable, 503 capacity, 503 store_unavailable,
        │                                504 sandbox_timeout
        ├── ContextError             the interpreter could not find or start a context
        └── ExecutionTimeoutError    an execution ran past its timeout (also a TimeoutError)

``e.response.status_code`` works on every error that came from an HTTP answer, so code written
for ``requests.HTTPError`` (``except HTTPError as e: if e.response.status_code == 404``) keeps
working: ``HTTPError`` is an alias of :class:`SandboxAPIError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Type

__all__ = [
    "ErrorResponse",
    "SandboxAPIError",
    "SandboxConnectionError",
    "UnauthorizedError",
    "SessionNotFoundError",
    "RateLimitError",
    "SandboxOperationError",
    "ContextNotFoundError",
    "ContextError",
    "ExecutionTimeoutError",
    "HTTPError",
    "InvalidRequestError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "SessionPausedError",
    "NotSupportedError",
    "PayloadTooLargeError",
    "SandboxUnavailableError",
    "ERROR_CODES",
    "status_of",
    "error_from_frame",
]


@dataclass(frozen=True)
class ErrorResponse:
    """The HTTP answer an error came from (``status_code``, ``headers``, ``text``)."""

    status_code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def json(self) -> Any:
        """The body parsed as JSON."""
        import json

        return json.loads(self.text)


class SandboxAPIError(Exception):
    """Base class of every SDK error."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = None,
        code: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        response: Optional[ErrorResponse] = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.status_code: Optional[int] = status_code
        self.code: Optional[str] = code
        self.details: dict[str, Any] = dict(details or {})
        if response is None and status_code is not None:
            response = ErrorResponse(status_code)
        self.response: Optional[ErrorResponse] = response

    def __str__(self) -> str:
        parts = []
        if self.status_code is not None:
            parts.append(str(self.status_code))
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class SandboxConnectionError(SandboxAPIError):
    """The server could not be reached, or the connection broke mid-request."""


class UnauthorizedError(SandboxAPIError):
    """401: the bearer token is missing, malformed, expired or wrongly signed."""


class SessionNotFoundError(SandboxAPIError):
    """404 ``session_not_found``: no such session belongs to the caller."""


class RateLimitError(SandboxAPIError):
    """429: too many requests (``rate_limited``) or a quota is used up (``quota_exceeded``).

    ``limit``, ``remaining`` and ``reset`` come from the ``RateLimit-*`` headers (``None`` when
    absent); ``retry_after`` is the ``Retry-After`` header in seconds.
    """

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 429,
        code: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        response: Optional[ErrorResponse] = None,
        limit: Optional[int] = None,
        remaining: Optional[int] = None,
        reset: Optional[int] = None,
        retry_after: Optional[int] = None,
    ) -> None:
        super().__init__(message, status_code, code, details, response)
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after


class SandboxOperationError(SandboxAPIError):
    """Any other failed operation (400, 403, 404, 409, 413, 5xx, …)."""


class InvalidRequestError(SandboxOperationError):
    """400 ``invalid_request``: the request is malformed or a value is out of bounds."""


class ForbiddenError(SandboxOperationError):
    """403 ``forbidden``: the token may not do this."""


class NotFoundError(SandboxOperationError):
    """404: no such route, process, file or image."""


class ConflictError(SandboxOperationError):
    """409 ``conflict``: the target is in a state that forbids the operation."""


class SessionPausedError(ConflictError):
    """409 ``session_paused``: the session is paused; ``resume()`` it first."""


class NotSupportedError(ConflictError):
    """409 ``not_supported``: the server's runtime cannot do this (pause a pod, say)."""


class PayloadTooLargeError(SandboxOperationError):
    """413 ``payload_too_large``: a body or a field is over its limit."""


class SandboxUnavailableError(SandboxOperationError):
    """502/503/504: the sandbox cannot answer now, the server is at capacity or cannot reach its
    sessions store (retry later), or the sandbox took too long."""


class ContextNotFoundError(SandboxOperationError):
    """404 ``context_not_found``: no interpreter or storage context with this id."""


class ContextError(SandboxOperationError):
    """The interpreter answered an execute with a ``ContextError`` frame: the context does not
    exist (``status_code`` 404) or could not be (re)started."""


class ExecutionTimeoutError(SandboxOperationError, TimeoutError):
    """An execution ran past its timeout (WebSocket close 4008). ``execution`` holds what it
    produced before. Also a built-in :class:`TimeoutError`."""

    def __init__(self, message: str, execution: Any = None) -> None:
        SandboxOperationError.__init__(self, message, None, "timeout")
        self.execution = execution


HTTPError = SandboxAPIError
"""Alias for code written against ``requests.HTTPError``."""


def _int_header(headers: Mapping[str, str], *names: str) -> Optional[int]:
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        try:
            return int(float(value.strip()))
        except ValueError:
            continue
    return None


def error_from_response(status_code: int, headers: Mapping[str, str], text: str) -> SandboxAPIError:
    """Turns a failed HTTP answer into the matching exception."""
    import json

    code: Optional[str] = None
    message = text.strip() or f"HTTP {status_code}"
    details: dict[str, Any] = {}
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            if isinstance(err.get("message"), str):
                message = err["message"]
            if isinstance(err.get("details"), dict):
                details = err["details"]
        elif isinstance(err, str):
            message = err
        elif isinstance(body.get("message"), str):
            message = body["message"]
    if code is None:
        code = headers.get("x-hutch-error-code")
    response = ErrorResponse(status_code, dict(headers), text)
    if status_code == 401:
        return UnauthorizedError(message, status_code, code, details, response)
    if status_code == 429:
        return RateLimitError(
            message,
            status_code,
            code,
            details,
            response,
            limit=_int_header(headers, "ratelimit-limit", "x-ratelimit-limit"),
            remaining=_int_header(headers, "ratelimit-remaining", "x-ratelimit-remaining"),
            reset=_int_header(headers, "ratelimit-reset", "x-ratelimit-reset"),
            retry_after=_int_header(headers, "retry-after"),
        )
    cls: Type[SandboxAPIError] = SandboxOperationError
    if code in ERROR_CODES and ERROR_CODES[code][0] == status_code:
        cls = ERROR_CODES[code][1]
    return cls(message, status_code, code, details, response)


ERROR_CODES: Dict[str, Tuple[int, Type[SandboxAPIError]]] = {
    "invalid_request": (400, InvalidRequestError),
    "unauthorized": (401, UnauthorizedError),
    "link_expired": (401, UnauthorizedError),
    "forbidden": (403, ForbiddenError),
    "link_invalid": (403, ForbiddenError),
    "not_found": (404, NotFoundError),
    "session_not_found": (404, SessionNotFoundError),
    "process_not_found": (404, NotFoundError),
    "file_not_found": (404, NotFoundError),
    "image_not_found": (404, NotFoundError),
    "context_not_found": (404, ContextNotFoundError),
    "storage_context_not_found": (404, ContextNotFoundError),
    "conflict": (409, ConflictError),
    "session_paused": (409, SessionPausedError),
    "not_supported": (409, NotSupportedError),
    "payload_too_large": (413, PayloadTooLargeError),
    "uri_too_long": (414, InvalidRequestError),
    "range_not_satisfiable": (416, InvalidRequestError),
    "image_pull_failed": (422, SandboxOperationError),
    "image_import_failed": (422, SandboxOperationError),
    "language_unavailable": (422, SandboxOperationError),
    "rate_limited": (429, RateLimitError),
    "quota_exceeded": (429, RateLimitError),
    "headers_too_large": (431, InvalidRequestError),
    "internal": (500, SandboxOperationError),
    "sandbox_unavailable": (502, SandboxUnavailableError),
    "sync_failed": (502, SandboxOperationError),
    "port_unreachable": (502, SandboxOperationError),
    "capacity": (503, SandboxUnavailableError),
    "store_unavailable": (503, SandboxUnavailableError),
    "sandbox_timeout": (504, SandboxUnavailableError),
    "disk_full": (507, SandboxOperationError),
}
"""Every error code of the API with its HTTP status and the class raised for it; a test keeps it
in step with ``components.schemas.ErrorCode`` of the server's OpenAPI document."""


def status_of(code: str) -> int:
    """The HTTP status the API answers with for ``code`` (500 for an unknown code)."""
    entry = ERROR_CODES.get(code)
    return entry[0] if entry else 500


def error_from_frame(detail: Mapping[str, Any]) -> SandboxAPIError:
    """The exception for an error envelope that arrived inside a stream (no HTTP status)."""
    import json

    code = str(detail.get("code", ""))
    return error_from_response(status_of(code), {}, json.dumps({"error": dict(detail)}))
