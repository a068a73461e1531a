/**
 * The errors the SDK throws.
 *
 * Every error the server reports has the envelope `{"error": {"code", "message", "details"}}`
 * with a stable `code`; the SDK throws the class {@link ERROR_CLASSES} names for that code.
 *
 * ```text
 * HutchError                          .status .code .message .details .requestId
 * ├── HutchConnectionError            the server could not be reached, or a stream broke
 * ├── ApiError                        the server answered with an error envelope
 * │   ├── InvalidRequestError         400 invalid_request
 * │   ├── UnauthorizedError           401 unauthorized
 * │   ├── ForbiddenError              403 forbidden
 * │   ├── NotFoundError               404 not_found
 * │   │   ├── SessionNotFoundError    404 session_not_found
 * │   │   ├── ProcessNotFoundError    404 process_not_found
 * │   │   ├── FileNotFoundError       404 file_not_found
 * │   │   ├── ContextNotFoundError    404 context_not_found
 * │   │   └── StorageContextNotFoundError  404 storage_context_not_found
 * │   ├── ConflictError               409 conflict
 * │   │   ├── SessionPausedError      409 session_paused (resume the session first)
 * │   │   └── NotSupportedError       409 not_supported (the server's runtime cannot do it)
 * │   ├── PayloadTooLargeError        413 payload_too_large
 * │   ├── UriTooLongError             414 uri_too_long
 * │   ├── RangeNotSatisfiableError    416 range_not_satisfiable
 * │   ├── HeadersTooLargeError        431 headers_too_large
 * │   ├── RateLimitError              429 rate_limited (.limit .remaining .reset .retryAfter)
 * │   │   └── QuotaExceededError      429 quota_exceeded
 * │   ├── InternalError               500 internal
 * │   ├── SyncFailedError             502 sync_failed
 * │   ├── SandboxUnavailableError     502 sandbox_unavailable
 * │   ├── CapacityError               503 capacity
 * │   ├── StoreUnavailableError       503 store_unavailable (retry later)
 * │   └── DiskFullError               507 disk_full
 * ├── ContextError                    an interpreter context could not be found or started
 * └── ExecutionTimeoutError           an execution ran past its timeout (.execution)
 * ```
 */

import type { components } from "./generated/openapi.js";

/** A stable error code of the API (`components.schemas.ErrorCode` of the OpenAPI document). */
export type ErrorCode = components["schemas"]["ErrorCode"];

/** What every constructor of the error classes takes. */
export interface ErrorInit {
  /** The HTTP status, when the error came from an HTTP answer. */
  status?: number;
  /** The server's error code. */
  code?: string;
  /** Structured details from the envelope (`details.path`, `details.field`, …). */
  details?: Record<string, unknown>;
  /** The `X-Request-Id` of the answer, for the server's log. */
  requestId?: string;
  /** The answer's headers (lower-case names). */
  headers?: Record<string, string>;
  /** The error that caused this one. */
  cause?: unknown;
}

/** Base class of every error the SDK throws. */
export class HutchError extends Error {
  /** The HTTP status, when the error came from an HTTP answer. */
  readonly status: number | undefined;
  /** The server's error code (`session_not_found`, …), when it named one. */
  readonly code: string | undefined;
  /** Structured details of the error envelope. */
  readonly details: Record<string, unknown>;
  /** The `X-Request-Id` of the answer. */
  readonly requestId: string | undefined;
  /** The answer's headers (lower-case names); empty when there was no answer. */
  readonly headers: Record<string, string>;

  constructor(message: string, init: ErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.requestId = init.requestId;
    this.headers = init.headers ?? {};
  }
}

/** The server could not be reached, did not answer in time, or a stream broke off. */
export class HutchConnectionError extends HutchError {}

/** The server answered with an error envelope. */
export class ApiError extends HutchError {}

/** 400 `invalid_request`: a value is malformed or out of range (`details.field`). */
export class InvalidRequestError extends ApiError {}
/** 401 `unauthorized`: the bearer token is missing, malformed, expired or wrongly signed. */
export class UnauthorizedError extends ApiError {}
/** 403 `forbidden`: the file API does not touch this path (`/proc`, `/sys`, `/dev`, …). */
export class ForbiddenError extends ApiError {}
/** 404 `not_found`: no such route or resource. The base of every other 404. */
export class NotFoundError extends ApiError {}
/** 404 `session_not_found`: no session with this id belongs to the caller. */
export class SessionNotFoundError extends NotFoundError {}
/** 404 `process_not_found`: the session has no process with this pid. */
export class ProcessNotFoundError extends NotFoundError {}
/** 404 `file_not_found`: no file or directory at the path (`details.path`). */
export class FileNotFoundError extends NotFoundError {}
/** 404 `context_not_found`: the session has no interpreter context with this id. */
export class ContextNotFoundError extends NotFoundError {}
/** 404 `storage_context_not_found`: no storage context with this id belongs to the caller. */
export class StorageContextNotFoundError extends NotFoundError {}
/** 409 `conflict`: the session's or the resource's state does not allow this. */
export class ConflictError extends ApiError {}

/** 409 `session_paused`: the session is paused; resume it first. */
export class SessionPausedError extends ConflictError {}
/** 409 `not_supported`: the server's runtime cannot do this (pause a pod, say). */
export class NotSupportedError extends ConflictError {}
/** 413 `payload_too_large`: the body is larger than accepted (`details.limitBytes`). */
export class PayloadTooLargeError extends ApiError {}
/** 414 `uri_too_long`: the path and query are longer than accepted. */
export class UriTooLongError extends ApiError {}
/** 416 `range_not_satisfiable`: the range lies outside the file (`details.size`). */
export class RangeNotSatisfiableError extends ApiError {}
/** 431 `headers_too_large`: the request's headers are larger than accepted. */
export class HeadersTooLargeError extends ApiError {}

/** 429 `rate_limited`: too many requests; the `RateLimit-*` and `Retry-After` headers parsed. */
export class RateLimitError extends ApiError {
  /** `RateLimit-Limit`, when sent. */
  readonly limit: number | undefined;
  /** `RateLimit-Remaining`, when sent. */
  readonly remaining: number | undefined;
  /** `RateLimit-Reset` in seconds, when sent. */
  readonly reset: number | undefined;
  /** `Retry-After` in seconds, when sent. */
  readonly retryAfter: number | undefined;

  constructor(message: string, init: ErrorInit = {}) {
    super(message, init);
    const headers = init.headers ?? {};
    this.limit = intHeader(headers, "ratelimit-limit", "x-ratelimit-limit");
    this.remaining = intHeader(headers, "ratelimit-remaining", "x-ratelimit-remaining");
    this.reset = intHeader(headers, "ratelimit-reset", "x-ratelimit-reset");
    this.retryAfter = intHeader(headers, "retry-after");
  }
}

/** 429 `quota_exceeded`: a per-tenant quota (sessions, memory, storage contexts, snapshots) is used up; `details.quota` names it. */
export class QuotaExceededError extends RateLimitError {}
/** 500 `internal`: an unexpected fault inside hutch; the server log has the cause. */
export class InternalError extends ApiError {}
/** 502 `sync_failed`: moving content between a session and a storage context failed. */
export class SyncFailedError extends ApiError {}
/** 502 `sandbox_unavailable`: the session's sandbox cannot be reached or failed. */
export class SandboxUnavailableError extends ApiError {}
/** 502 `port_unreachable`: nothing in the session accepts connections on the port. */
export class PortUnreachableError extends ApiError {}
/** 401 `link_expired`: the preview link has expired; ask for a new one. */
export class LinkExpiredError extends ApiError {}
/** 403 `link_invalid`: the preview link is malformed, wrongly signed, or for another port. */
export class LinkInvalidError extends ApiError {}
/** 504 `sandbox_timeout`: the session's sandbox did not answer in time (stopped or stuck). */
export class SandboxTimeoutError extends ApiError {}
/** 503 `capacity`: the server runs as many sessions as it may. */
export class CapacityError extends ApiError {}
/** 503 `store_unavailable`: the server's sessions store cannot be reached; nothing changed, retry later. */
export class StoreUnavailableError extends ApiError {}
/** 422 `language_unavailable`: the session's image lacks the language's program. */
export class LanguageUnavailableError extends ApiError {}
/** 404 `image_not_found`: no image of this name here, in its registry or among snapshots. */
export class ImageNotFoundError extends ApiError {}
/** 422 `image_pull_failed`: the registry refused or failed (`details.registryAnswer`). */
export class ImagePullFailedError extends ApiError {}
/** 422 `image_import_failed`: the body is not an importable image archive. */
export class ImageImportFailedError extends ApiError {}
/** 507 `disk_full`: the session's disk quota is exhausted (`details.path`). */
export class DiskFullError extends ApiError {}

/** An interpreter context does not exist (`status` 404) or could not be (re)started. */
export class ContextError extends HutchError {}

/** An execution ran past its timeout; `execution` holds what it produced before. */
export class ExecutionTimeoutError extends HutchError {
  /** What the execution produced before its timeout. */
  readonly execution: unknown;

  constructor(message: string, execution: unknown) {
    super(message, { code: "timeout" });
    this.execution = execution;
  }
}

/** The constructor of an {@link ApiError} class. */
export type ApiErrorClass = new (message: string, init?: ErrorInit) => ApiError;

/**
 * The HTTP status and error class of each error code of the API. The type makes the compiler
 * demand an entry for every code of the OpenAPI document; a test checks the statuses.
 */
export const ERROR_CLASSES: { readonly [code in ErrorCode]: readonly [number, ApiErrorClass] } = {
  invalid_request: [400, InvalidRequestError],
  unauthorized: [401, UnauthorizedError],
  forbidden: [403, ForbiddenError],
  not_found: [404, NotFoundError],
  session_not_found: [404, SessionNotFoundError],
  process_not_found: [404, ProcessNotFoundError],
  file_not_found: [404, FileNotFoundError],
  context_not_found: [404, ContextNotFoundError],
  storage_context_not_found: [404, StorageContextNotFoundError],
  conflict: [409, ConflictError],
  session_paused: [409, SessionPausedError],
  not_supported: [409, NotSupportedError],
  payload_too_large: [413, PayloadTooLargeError],
  uri_too_long: [414, UriTooLongError],
  range_not_satisfiable: [416, RangeNotSatisfiableError],
  headers_too_large: [431, HeadersTooLargeError],
  rate_limited: [429, RateLimitError],
  quota_exceeded: [429, QuotaExceededError],
  internal: [500, InternalError],
  sync_failed: [502, SyncFailedError],
  sandbox_unavailable: [502, SandboxUnavailableError],
  capacity: [503, CapacityError],
  store_unavailable: [503, StoreUnavailableError],
  disk_full: [507, DiskFullError],
  port_unreachable: [502, PortUnreachableError],
  link_expired: [401, LinkExpiredError],
  link_invalid: [403, LinkInvalidError],
  sandbox_timeout: [504, SandboxTimeoutError],
  language_unavailable: [422, LanguageUnavailableError],
  image_not_found: [404, ImageNotFoundError],
  image_pull_failed: [422, ImagePullFailedError],
  image_import_failed: [422, ImageImportFailedError],
};

/** The class for an answer whose body named no known code, by HTTP status. */
function classForStatus(status: number): ApiErrorClass {
  switch (status) {
    case 400:
      return InvalidRequestError;
    case 401:
      return UnauthorizedError;
    case 403:
      return ForbiddenError;
    case 404:
      return NotFoundError;
    case 409:
      return ConflictError;
    case 429:
      return RateLimitError;
    default:
      return ApiError;
  }
}

/** The error for an error envelope (`{"code", "message", "details"}`) and its HTTP answer. */
export function errorFromEnvelope(
  envelope: { code?: unknown; message?: unknown; details?: unknown },
  init: { status?: number; headers?: Record<string, string> } = {},
): ApiError {
  const headers = init.headers ?? {};
  const code =
    typeof envelope.code === "string" ? envelope.code : headers["x-hutch-error-code"] || undefined;
  const entry = code !== undefined ? ERROR_CLASSES[code as ErrorCode] : undefined;
  const status = init.status ?? entry?.[0];
  const Class = entry?.[1] ?? classForStatus(status ?? 0);
  const message =
    typeof envelope.message === "string" && envelope.message
      ? envelope.message
      : `HTTP ${status ?? "error"}`;
  const details =
    envelope.details && typeof envelope.details === "object"
      ? (envelope.details as Record<string, unknown>)
      : {};
  return new Class(message, {
    status,
    code,
    details,
    headers,
    requestId: headers["x-request-id"],
  });
}

/** The error for a failed HTTP answer: its status, headers and body text. */
export function errorFromResponse(
  status: number,
  headers: Record<string, string>,
  body: string,
): ApiError {
  let envelope: { code?: unknown; message?: unknown; details?: unknown } = {
    message: body.trim() || `HTTP ${status}`,
  };
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === "object" && "error" in parsed) {
      const error = (parsed as { error: unknown }).error;
      if (error && typeof error === "object") {
        envelope = error;
      } else if (typeof error === "string") {
        envelope = { message: error };
      }
    }
  } catch {
    // Not JSON: the text is the message.
  }
  return errorFromEnvelope(envelope, { status, headers });
}

function intHeader(headers: Record<string, string>, ...names: string[]): number | undefined {
  for (const name of names) {
    const value = headers[name];
    if (value === undefined) continue;
    const parsed = Number.parseFloat(value.trim());
    if (Number.isFinite(parsed)) return Math.trunc(parsed);
  }
  return undefined;
}
