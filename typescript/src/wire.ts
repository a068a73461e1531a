/**
 * A lean HTTP/1.1 client for the SDK's hot path over plain `http://`: kept connections, the
 * request in one write, and a small parser for the answer.
 *
 * The most frequent calls (`commands.run`, `interpreter.execute` and the other JSON calls)
 * are small requests with small answers. Node's `http` client spends about a millisecond of
 * CPU on each (a `ClientRequest` and an `IncomingMessage` with their stream machinery, the
 * agent's socket bookkeeping, timers, a readable stream read back with `for await`), more
 * than the server spends answering. A {@link Lane} speaks just what those calls need: it
 * writes the request at once, parses the answer's head, then a `Content-Length`, chunked or
 * until-close body, and hands the body's bytes to the caller as they come. Anything else
 * (TLS, streamed uploads, answers read as streams, WebSockets) stays on `http`.
 *
 * A kept connection that the server closes while idle leaves the pool as it closes. When a
 * reused connection fails before any byte of the answer came, an idempotent request is sent
 * once more on a fresh connection.
 */

import net from "node:net";

/** The longest response head accepted, in bytes. */
const HEAD_MAX = 64 * 1024;
/** Kept idle connections per lane at most. */
const MAX_IDLE = 16;

const IDEMPOTENT = new Set(["GET", "HEAD", "DELETE", "OPTIONS"]);

/** The connection failed or the answer was not HTTP/1.1. */
export class WireError extends Error {
  /** Whether this was a kept connection and no byte of the answer had come. */
  readonly stale: boolean;
  constructor(message: string, stale = false, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "WireError";
    this.stale = stale;
  }
}

/** The server sent no answer's head within the timeout. */
export class WireTimeout extends WireError {}

/** An answer's status and headers (names in lower case, repeated values joined by `, `). */
export interface WireHead {
  /** The status code. */
  status: number;
  /** The headers. */
  headers: Record<string, string>;
}

/** One request on a {@link Lane}. */
export interface WireRequest {
  /** The method. */
  method: string;
  /** The request target: path and query. */
  target: string;
  /** Request headers (without `Host`, `Content-Length` and `Connection`). */
  headers: Record<string, string>;
  /** The body, sent at once. */
  body?: Buffer;
  /** How long to wait for the answer's head, in milliseconds. */
  timeoutMs: number;
  /**
   * Called with each piece of the answer's body as it comes, beside the answer's head; an
   * error it throws ends the exchange (and rejects with that error).
   */
  onData(chunk: Buffer, head: WireHead): void;
}

/** A pool of kept connections to one `host:port`. */
export class Lane {
  private readonly idle: Connection[] = [];
  private closed = false;

  /** A lane to `host:port`; `hostHeader` is what requests name as `Host`. */
  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly hostHeader: string,
  ) {}

  /** Closes every kept connection; later requests fail. */
  close(): void {
    this.closed = true;
    for (const connection of this.idle.splice(0)) connection.socket.destroy();
  }

  /**
   * Sends `request` and resolves with the answer's head once its whole body has been handed
   * to `request.onData`. Rejects with a {@link WireError}.
   */
  async send(request: WireRequest): Promise<WireHead> {
    const bytes = this.encode(request);
    let retries = IDEMPOTENT.has(request.method) ? 1 : 0;
    for (;;) {
      const connection = this.take();
      try {
        const { head, reusable } = await connection.exchange(bytes, request);
        if (reusable) this.give(connection);
        else connection.socket.destroy();
        return head;
      } catch (error) {
        connection.socket.destroy();
        if (error instanceof WireError && error.stale && retries > 0) {
          retries -= 1;
          continue;
        }
        throw error;
      }
    }
  }

  private encode(request: WireRequest): Buffer {
    let head = `${request.method} ${request.target} HTTP/1.1\r\nhost: ${this.hostHeader}\r\n`;
    for (const name in request.headers) {
      const value = request.headers[name];
      // As Node's `http` does: a name or value that could end the line is refused.
      if (/[\r\n\0]/.test(name) || /[\r\n\0]/.test(value) || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
        throw new TypeError(`invalid header ${JSON.stringify(name)}`);
      }
      head += `${name}: ${value}\r\n`;
    }
    const body = request.body;
    if (body !== undefined || (request.method !== "GET" && request.method !== "HEAD")) {
      head += `content-length: ${body?.length ?? 0}\r\n`;
    }
    head += "\r\n";
    return body === undefined || body.length === 0
      ? Buffer.from(head, "latin1")
      : Buffer.concat([Buffer.from(head, "latin1"), body]);
  }

  private take(): Connection {
    if (this.closed) throw new WireError("the client is closed");
    for (;;) {
      const kept = this.idle.pop();
      if (kept === undefined) {
        return new Connection(net.connect({ host: this.host, port: this.port, noDelay: true }), false);
      }
      if (!kept.dead) {
        kept.reused = true;
        kept.socket.ref();
        return kept;
      }
      kept.socket.destroy();
    }
  }

  private give(connection: Connection): void {
    if (this.closed || connection.dead || this.idle.length >= MAX_IDLE) {
      connection.socket.destroy();
      return;
    }
    connection.park();
    this.idle.push(connection);
  }
}

/** What a connection is doing with the bytes it reads. */
type Phase =
  | { kind: "head" }
  | { kind: "length"; left: number }
  | { kind: "chunk-size" }
  | { kind: "chunk-data"; left: number }
  | { kind: "chunk-end" }
  | { kind: "trailers" }
  | { kind: "until-close" };

/** One socket and the exchange it carries. */
class Connection {
  /** Whether the socket closed or failed. */
  dead = false;
  private buffer: Buffer = Buffer.alloc(0);
  private phase: Phase = { kind: "head" };
  private head: WireHead | undefined;
  private reusable = true;
  private answered = false;
  private current: WireRequest | undefined;
  private settle: ((error?: Error) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly socket: net.Socket,
    public reused: boolean,
  ) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.onClose());
    socket.on("close", () => this.onClose());
    socket.on("error", (error) => this.fail(new WireError(error.message, this.reused && !this.answered, { cause: error })));
  }

  /** Marks the connection idle between exchanges. */
  park(): void {
    this.current = undefined;
    this.settle = undefined;
    // An idle kept connection does not keep the process alive.
    this.socket.unref();
  }

  /** Writes `bytes` and reads the answer to `request`. */
  exchange(bytes: Buffer, request: WireRequest): Promise<{ head: WireHead; reusable: boolean }> {
    this.current = request;
    this.phase = { kind: "head" };
    this.head = undefined;
    this.reusable = true;
    this.answered = false;
    return new Promise((resolve, reject) => {
      this.settle = (error) => {
        this.settle = undefined;
        if (this.timer !== undefined) clearTimeout(this.timer);
        this.timer = undefined;
        if (error) reject(error);
        else if (this.head) resolve({ head: this.head, reusable: this.reusable && !this.dead });
        else reject(new WireError("the answer ended without a head"));
      };
      if (this.dead) {
        this.fail(new WireError("the kept connection closed", true));
        return;
      }
      this.timer = setTimeout(
        () => this.fail(new WireTimeout(`no answer in ${request.timeoutMs} ms`)),
        request.timeoutMs,
      );
      this.socket.write(bytes);
    });
  }

  private fail(error: Error): void {
    this.dead = true;
    this.settle?.(error);
  }

  private onClose(): void {
    if (this.dead) return;
    this.dead = true;
    if (this.settle === undefined) {
      this.socket.destroy();
      return;
    }
    if (this.phase.kind === "until-close" || (this.phase.kind === "length" && this.phase.left === 0)) {
      this.settle();
    } else {
      this.settle(new WireError("the server closed the connection mid-answer", this.reused && !this.answered));
    }
  }

  private onData(chunk: Buffer): void {
    if (this.settle === undefined) {
      // Bytes on an idle connection: nothing can be trusted on it any more.
      this.dead = true;
      this.socket.destroy();
      return;
    }
    this.answered = true;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    try {
      this.advance();
    } catch (error) {
      this.fail(error instanceof Error ? error : new WireError(String(error)));
    }
  }

  /** Consumes what the buffer holds, phase by phase; settles at the answer's end. */
  private advance(): void {
    const request = this.current;
    if (request === undefined) return;
    for (;;) {
      const phase = this.phase;
      const head = this.head as WireHead;
      switch (phase.kind) {
        case "head": {
          const end = this.buffer.indexOf("\r\n\r\n");
          if (end < 0) {
            if (this.buffer.length > HEAD_MAX) throw new WireError("the answer's head is too long");
            return;
          }
          this.head = parseHead(this.buffer.toString("latin1", 0, end));
          this.buffer = this.buffer.subarray(end + 4);
          if (this.timer !== undefined) clearTimeout(this.timer);
          this.timer = undefined;
          const { status, headers } = this.head;
          if (status >= 100 && status < 200) {
            this.phase = { kind: "head" };
            continue;
          }
          if ((headers.connection ?? "").toLowerCase().includes("close")) this.reusable = false;
          const encoding = (headers["transfer-encoding"] ?? "").toLowerCase();
          if (request.method === "HEAD" || status === 204 || status === 304) {
            this.phase = { kind: "length", left: 0 };
          } else if (encoding.endsWith("chunked")) {
            this.phase = { kind: "chunk-size" };
          } else if (headers["content-length"] !== undefined) {
            const left = Number(headers["content-length"]);
            if (!Number.isSafeInteger(left) || left < 0) throw new WireError("a bad Content-Length");
            this.phase = { kind: "length", left };
          } else {
            this.reusable = false;
            this.phase = { kind: "until-close" };
          }
          continue;
        }
        case "length": {
          if (phase.left === 0) {
            this.done();
            return;
          }
          if (this.buffer.length === 0) return;
          const piece = this.buffer.subarray(0, phase.left);
          this.buffer = this.buffer.subarray(piece.length);
          phase.left -= piece.length;
          request.onData(piece, head);
          continue;
        }
        case "until-close": {
          if (this.buffer.length > 0) request.onData(this.buffer, head);
          this.buffer = Buffer.alloc(0);
          return;
        }
        case "chunk-size": {
          const end = this.buffer.indexOf("\r\n");
          if (end < 0) {
            if (this.buffer.length > 1024) throw new WireError("a bad chunk size line");
            return;
          }
          const size = parseInt(this.buffer.toString("latin1", 0, end).split(";")[0].trim(), 16);
          if (!Number.isSafeInteger(size) || size < 0) throw new WireError("a bad chunk size");
          this.buffer = this.buffer.subarray(end + 2);
          this.phase = size === 0 ? { kind: "trailers" } : { kind: "chunk-data", left: size };
          continue;
        }
        case "chunk-data": {
          if (this.buffer.length === 0) return;
          const piece = this.buffer.subarray(0, phase.left);
          this.buffer = this.buffer.subarray(piece.length);
          phase.left -= piece.length;
          request.onData(piece, head);
          if (phase.left === 0) this.phase = { kind: "chunk-end" };
          continue;
        }
        case "chunk-end": {
          if (this.buffer.length < 2) return;
          if (this.buffer[0] !== 0x0d || this.buffer[1] !== 0x0a) throw new WireError("a chunk without its CRLF");
          this.buffer = this.buffer.subarray(2);
          this.phase = { kind: "chunk-size" };
          continue;
        }
        case "trailers": {
          const end = this.buffer.indexOf("\r\n");
          if (end < 0) {
            if (this.buffer.length > HEAD_MAX) throw new WireError("the trailers are too long");
            return;
          }
          this.buffer = this.buffer.subarray(end + 2);
          if (end === 0) {
            this.done();
            return;
          }
          continue;
        }
      }
    }
  }

  private done(): void {
    // Bytes beyond the answer mean the connection is out of step: not kept.
    if (this.buffer.length > 0) this.reusable = false;
    this.buffer = Buffer.alloc(0);
    this.settle?.();
  }
}

/** Status and headers from a head's text (without its blank line). */
function parseHead(text: string): WireHead {
  const lines = text.split("\r\n");
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!match) throw new WireError(`not an HTTP/1.1 answer: ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`);
  const headers: Record<string, string> = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    if (colon <= 0) throw new WireError("a malformed header line");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { status: Number(match[1]), headers };
}
