/**
 * The HTTP transport every part of the SDK shares: base URL, bearer token, one keep-alive
 * connection pool, request bodies and answers as Node streams, and errors mapped to the SDK's
 * classes.
 */

import http from "node:http";
import https from "node:https";
import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

import { HutchConnectionError, errorFromResponse } from "./errors.js";
import { Lane, WireError, WireTimeout } from "./wire.js";
import type { WireHead } from "./wire.js";

/** Query parameters; `undefined` and `null` values are left out. */
export type Query = Record<string, string | number | boolean | undefined | null>;

/** A request body: bytes or text sent at once, or a stream sent as it comes. */
export type Body = string | Uint8Array | Readable | AsyncIterable<Uint8Array>;

/** How the transport reaches the server. */
export interface TransportOptions {
  /** The server, with or without `/v1`. */
  url: string;
  /** The bearer token. */
  token: string;
  /** How long a request may wait for the server before it fails, in milliseconds. */
  timeoutMs: number;
  /** Whether an HTTPS server's certificate must verify; default true. */
  verifyTls?: boolean;
}

/** Options of one request. */
export interface RequestOptions {
  /** Query parameters. */
  query?: Query;
  /** A JSON body. */
  json?: unknown;
  /** A raw body (with `contentType`, default `application/octet-stream`). */
  body?: Body;
  /** The body's `Content-Type`. */
  contentType?: string;
  /** The body's length, when known (otherwise a stream is sent chunked). */
  contentLength?: number;
  /** More request headers. */
  headers?: Record<string, string>;
  /** This request's timeout in milliseconds (idle time waiting for the server). */
  timeoutMs?: number;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "DELETE", "OPTIONS"]);

/** The most of an error answer's body read for its message. */
const MAX_ERROR_BODY = 64 * 1024;

/** `http://host:port` or `http://host:port/v1` → `http://host:port/v1` (no trailing slash). */
export function normalizeApiUrl(url: string): string {
  let out = url.trim().replace(/\/+$/, "");
  if (!/^https?:\/\//.test(out)) {
    throw new TypeError(`url must start with http:// or https://, got ${JSON.stringify(url)}`);
  }
  if (!out.endsWith("/v1")) out += "/v1";
  return out;
}

/** One connection pool to one server with one token. */
export class Transport {
  /** The API's base URL, ending in `/v1`. */
  readonly apiUrl: string;
  /** The bearer token, in a private field: `JSON.stringify` and `console.log` of a client,
   * a session or this transport never show it. */
  readonly #token: string;
  /** The default request timeout in milliseconds. */
  readonly timeoutMs: number;
  /** Whether an HTTPS server's certificate must verify. */
  readonly verifyTls: boolean;
  private readonly base: URL;
  private readonly agent: http.Agent;
  /** Kept connections of the lean client, over `http://` only. */
  private readonly lane: Lane | undefined;
  private closed = false;

  /** The bearer token. */
  get token(): string {
    return this.#token;
  }

  constructor(options: TransportOptions) {
    this.apiUrl = normalizeApiUrl(options.url);
    this.#token = options.token;
    this.timeoutMs = options.timeoutMs;
    this.verifyTls = options.verifyTls ?? true;
    this.base = new URL(this.apiUrl);
    const agentOptions = { keepAlive: true, maxSockets: 64, maxFreeSockets: 16 };
    this.agent =
      this.base.protocol === "https:"
        ? new https.Agent({ ...agentOptions, rejectUnauthorized: this.verifyTls })
        : new http.Agent(agentOptions);
    this.lane =
      this.base.protocol === "http:"
        ? new Lane(this.base.hostname.replace(/^\[|\]$/g, ""), Number(this.base.port || 80), this.base.host)
        : undefined;
  }

  /** The server's root: the API URL without `/v1`. */
  get rootUrl(): string {
    return this.apiUrl.slice(0, -"/v1".length);
  }

  /** The full URL of an API path (`/sessions/…`) with its query. */
  url(path: string, query?: Query): URL {
    const url = new URL(this.apiUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    return url;
  }

  /** Closes the pooled connections; later requests fail. */
  close(): void {
    this.closed = true;
    this.agent.destroy();
    this.lane?.close();
  }

  /** Whether {@link exchange} can carry a request to `path` with these options. */
  lean(path: string, options: RequestOptions = {}): boolean {
    return (
      this.lane !== undefined && !path.startsWith("http") && (options.body === undefined || isBytes(options.body))
    );
  }

  /**
   * Sends a request whose body is bytes (or none) over the lean client's kept connections
   * (see `wire.ts`) and hands each piece of the answer's body to `onData` as it comes;
   * resolves with the answer's head once the body has ended. A 4xx or 5xx answer rejects
   * with the SDK error for its code. Only where {@link lean} says so.
   */
  async exchange(
    method: string,
    path: string,
    options: RequestOptions,
    onData: (chunk: Buffer) => void,
  ): Promise<WireHead> {
    if (this.closed || this.lane === undefined) throw new HutchConnectionError("the client is closed");
    const { headers, body } = this.encode(method, options);
    if (path.startsWith("http") || (body !== undefined && !isBytes(body))) {
      throw new TypeError("exchange() takes an API path and a body of bytes; use request()");
    }
    const url = this.url(path, options.query);
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    delete headers["content-length"];
    const failure: Buffer[] = [];
    let failed = 0;
    let head: WireHead;
    try {
      head = await this.lane.send({
        method,
        target: url.pathname + url.search,
        headers,
        body: body === undefined ? undefined : Buffer.from(body as string | Uint8Array),
        timeoutMs,
        onData: (chunk, { status }) => {
          if (status < 400) {
            onData(chunk);
          } else if (failed < MAX_ERROR_BODY) {
            failure.push(chunk);
            failed += chunk.length;
          }
        },
      });
    } catch (error) {
      if (error instanceof WireTimeout) {
        throw new HutchConnectionError(`${method} ${url.pathname}: no answer from ${this.apiUrl} in ${timeoutMs} ms`, {
          cause: error,
        });
      }
      if (error instanceof WireError) {
        throw new HutchConnectionError(`cannot reach ${this.apiUrl}: ${error.message}`, { cause: error });
      }
      throw error;
    }
    if (head.status >= 400) {
      throw errorFromResponse(head.status, head.headers, Buffer.concat(failure).toString("utf8"));
    }
    return head;
  }

  /**
   * Sends a request and resolves with the streamed answer once its headers arrive. A 4xx or
   * 5xx answer rejects with the SDK error for its code. The caller must read or discard the
   * answer's body (so its connection returns to the pool).
   */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<IncomingMessage> {
    if (this.closed) throw new HutchConnectionError("the client is closed");
    const url = path.startsWith("http") ? new URL(path) : this.url(path, options.query);
    const replayable = options.body === undefined || isBytes(options.body);
    // A pooled connection the server has just closed fails at once: an idempotent request
    // whose body can be sent again is sent once more on a fresh connection.
    let retries = IDEMPOTENT.has(method) && replayable ? 1 : 0;
    for (;;) {
      try {
        const response = await this.send(method, url, options);
        if (response.statusCode !== undefined && response.statusCode >= 400) {
          const text = await readText(response, MAX_ERROR_BODY);
          throw errorFromResponse(response.statusCode, headerRecord(response), text);
        }
        return response;
      } catch (error) {
        if (error instanceof StaleConnection && retries > 0) {
          retries -= 1;
          continue;
        }
        if (error instanceof StaleConnection) {
          throw new HutchConnectionError(`cannot reach ${this.apiUrl}: ${error.message}`, {
            cause: error.cause,
          });
        }
        throw error;
      }
    }
  }

  /** Sends a request and resolves with its JSON answer (`undefined` when empty). */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    let text: string;
    if (this.lean(path, options)) {
      const chunks: Buffer[] = [];
      await this.exchange(method, path, options, (chunk) => chunks.push(chunk));
      text = chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8");
    } else {
      text = await readText(await this.request(method, path, options));
    }
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new HutchConnectionError(`${method} ${path}: the answer is not JSON`, { cause: error });
    }
  }

  /** A request's headers and its body (JSON encoded), as both clients send them. */
  private encode(method: string, options: RequestOptions): { headers: Record<string, string>; body: Body | undefined } {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token}`,
      "user-agent": "hutch-typescript",
      ...options.headers,
    };
    let body: Body | undefined = options.body;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers["content-type"] = "application/json";
    } else if (body !== undefined) {
      headers["content-type"] = options.contentType ?? "application/octet-stream";
    }
    if (typeof body === "string") body = Buffer.from(body);
    if (body instanceof Uint8Array) {
      headers["content-length"] = String(body.byteLength);
    } else if (body !== undefined && options.contentLength !== undefined) {
      headers["content-length"] = String(options.contentLength);
    } else if (body === undefined && method !== "GET" && method !== "HEAD") {
      headers["content-length"] = "0";
    }
    return { headers, body };
  }

  private send(method: string, url: URL, options: RequestOptions): Promise<IncomingMessage> {
    const { headers, body } = this.encode(method, options);
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const module = url.protocol === "https:" ? https : http;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const request = module.request(url, { method, headers, agent: this.agent });
      let answered = false;
      request.setTimeout(timeoutMs, () => {
        request.destroy(
          new HutchConnectionError(
            `${method} ${url.pathname}: no answer from ${this.apiUrl} in ${timeoutMs} ms`,
          ),
        );
      });
      request.once("response", (response) => {
        answered = true;
        // The timeout covers waiting for the server, not how long the caller reads.
        request.setTimeout(0);
        response.socket?.setTimeout(0);
        resolve(response);
      });
      request.once("error", (error: NodeJS.ErrnoException) => {
        if (answered) return;
        if (error instanceof HutchConnectionError) {
          reject(error);
        } else if (request.reusedSocket && (error.code === "ECONNRESET" || error.code === "EPIPE")) {
          reject(new StaleConnection(error.message, error));
        } else {
          reject(
            new HutchConnectionError(`cannot reach ${this.apiUrl}: ${error.message}`, { cause: error }),
          );
        }
      });
      if (body === undefined) {
        request.end();
      } else if (body instanceof Uint8Array) {
        request.end(body);
      } else {
        const source = body instanceof Readable ? body : Readable.from(body, { objectMode: false });
        pipeline(source, request).catch((error: unknown) => {
          if (!answered) {
            request.destroy();
            reject(
              error instanceof HutchConnectionError
                ? error
                : new HutchConnectionError(`${method} ${url.pathname}: sending the body failed`, {
                    cause: error,
                  }),
            );
          }
        });
      }
    });
  }
}

/** A pooled connection that the server closed before this request reached it. */
class StaleConnection extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
  }
}

function isBytes(body: Body): boolean {
  return typeof body === "string" || body instanceof Uint8Array;
}

/** The answer's headers as a record of lower-case names to (joined) values. */
export function headerRecord(response: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(response.headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

/** Reads an answer's body as UTF-8 text (at most `limit` bytes; the rest is discarded). */
export async function readText(response: IncomingMessage, limit = Infinity): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    if (size < limit) {
      chunks.push(chunk);
      size += chunk.length;
    }
  }
  return Buffer.concat(chunks).toString("utf8");
}
