/**
 * WebSocket plumbing: connect with the bearer token (the `ws` package: Node 18 and 20 have no
 * global WebSocket, and a browser-style one cannot send an `Authorization` header), map a
 * refused handshake to the SDK's error, and read messages as an async iterator with
 * backpressure and the close code.
 */

import WebSocket from "ws";

import { HutchConnectionError, errorFromResponse } from "./errors.js";
import { type Query, type Transport, headerRecord, readText } from "./transport.js";

/** One message received on a WebSocket. */
export interface Message {
  /** Its bytes. */
  data: Buffer;
  /** Whether it was a binary message (otherwise text). */
  binary: boolean;
}

/** The socket is paused when this many messages wait to be read, resumed below the half. */
const HIGH_WATER = 256;

/**
 * Opens `ws(s)://…/v1{path}` with the bearer header and resolves with its reader once open;
 * rejects with the SDK's errors. The reader listens from the start: a message that comes in
 * the same packet as the handshake's answer is not lost.
 */
export function connect(transport: Transport, path: string, query?: Query): Promise<MessageReader> {
  const url = transport.url(path, query);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, {
    headers: { authorization: `Bearer ${transport.token}`, "user-agent": "hutch-typescript" },
    perMessageDeflate: false,
    maxPayload: 256 * 1024 * 1024,
    handshakeTimeout: transport.timeoutMs,
    rejectUnauthorized: transport.verifyTls,
  });
  const reader = new MessageReader(ws);
  return new Promise<MessageReader>((resolve, reject) => {
    const onError = (error: Error): void => {
      reject(new HutchConnectionError(`cannot open ${url.pathname}: ${error.message}`, { cause: error }));
    };
    ws.once("error", onError);
    ws.once("open", () => {
      ws.off("error", onError);
      resolve(reader);
    });
    ws.once("unexpected-response", (request, response) => {
      // The refused handshake's connection is not reused: close it once its body is read.
      const socket = response.socket;
      const done = (): void => {
        request.destroy();
        socket?.destroy();
      };
      readText(response, 64 * 1024).then(
        (text) => {
          reject(errorFromResponse(response.statusCode ?? 0, headerRecord(response), text));
          done();
        },
        (error: Error) => {
          onError(error);
          done();
        },
      );
    });
  });
}

/**
 * The messages of an open WebSocket as an async iterator, until it closes. Messages wait in a
 * bounded queue: when the reader falls behind, the socket is paused, so the server waits too
 * and memory stays flat.
 */
export class MessageReader implements AsyncIterableIterator<Message> {
  /** The close code, once the socket closed (1006 when it broke without one). */
  closeCode: number | undefined;
  /** The close reason, once the socket closed. */
  closeReason = "";
  private readonly queue: Message[] = [];
  private waiter: ((result: IteratorResult<Message>) => void) | undefined;
  private paused = false;
  private closed = false;

  constructor(readonly ws: WebSocket) {
    ws.on("message", (data: WebSocket.RawData, binary: boolean) => {
      const message = { data: toBuffer(data), binary };
      if (this.waiter) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter({ value: message, done: false });
        return;
      }
      this.queue.push(message);
      if (!this.paused && this.queue.length >= HIGH_WATER) {
        this.paused = true;
        ws.pause();
      }
    });
    ws.on("close", (code: number, reason: Buffer) => {
      this.closed = true;
      this.closeCode = code;
      this.closeReason = reason.toString("utf8");
      this.finish();
    });
    ws.on("error", () => {
      // A broken connection also emits "close" (code 1006), which ends the iteration.
    });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** The next message, or done once the socket closed and every message was read. */
  next(): Promise<IteratorResult<Message>> {
    const message = this.queue.shift();
    if (message) {
      if (this.paused && this.queue.length < HIGH_WATER / 2) {
        this.paused = false;
        this.ws.resume();
      }
      return Promise.resolve({ value: message, done: false });
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Stops reading: closes the socket (normal closure). */
  return(): Promise<IteratorResult<Message>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Closes the socket (normal closure) without waiting. */
  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(1000);
    }
    // Whatever arrives after this is not wanted: end the iteration now.
    this.queue.length = 0;
    this.closed = true;
    if (this.paused) this.ws.resume();
    this.finish();
  }

  private finish(): void {
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter({ value: undefined, done: true });
    }
  }
}

/** Parses a text message as a JSON object; `undefined` for anything else. */
export function jsonFrame(message: Message): Record<string, unknown> | undefined {
  if (message.binary) return undefined;
  try {
    const value: unknown = JSON.parse(message.data.toString("utf8"));
    return value && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
