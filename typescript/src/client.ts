/** The entry point: `new Hutch({ url, token })`. */

import { StorageContexts } from "./storage.js";
import { Sessions } from "./sessions.js";
import { Transport } from "./transport.js";
import type { Schemas } from "./types.js";

/** Options of {@link Hutch}. */
export interface HutchOptions {
  /** The server, with or without `/v1`; default `HUTCH_URL`, else `http://127.0.0.1:7420`. */
  url?: string;
  /** The bearer token; default `HUTCH_TOKEN`. */
  token?: string;
  /** How long a request may wait for the server, in milliseconds; default 30000. */
  timeoutMs?: number;
  /** Whether an HTTPS server's certificate must verify; default true. */
  verifyTls?: boolean;
}

/** The server's address when neither the options nor `HUTCH_URL` name one. */
export const DEFAULT_URL = "http://127.0.0.1:7420";

/**
 * A client of one hutch server. It keeps its HTTP connections alive between calls; `close()`
 * releases them.
 */
export class Hutch {
  /** The caller's sessions. */
  readonly sessions: Sessions;
  /** The caller's storage contexts. */
  readonly contexts: StorageContexts;
  private readonly transport: Transport;

  constructor(options: HutchOptions = {}) {
    const token = options.token ?? process.env.HUTCH_TOKEN;
    if (!token) {
      throw new TypeError("no token: pass { token } or set HUTCH_TOKEN (mint one with `hutch token --sub NAME`)");
    }
    this.transport = new Transport({
      url: options.url ?? process.env.HUTCH_URL ?? DEFAULT_URL,
      token,
      timeoutMs: options.timeoutMs ?? 30_000,
      verifyTls: options.verifyTls,
    });
    this.sessions = new Sessions(this.transport);
    this.contexts = new StorageContexts(this.transport);
  }

  /** The API's base URL, ending in `/v1`. */
  get apiUrl(): string {
    return this.transport.apiUrl;
  }

  /** `GET /health`: whether the server has finished starting. */
  async health(): Promise<Schemas["Health"]> {
    return this.transport.json<Schemas["Health"]>("GET", `${this.transport.rootUrl}/health`);
  }

  /** `GET /v1/openapi.json`: the server's OpenAPI document. */
  openapi(): Promise<Record<string, unknown>> {
    return this.transport.json<Record<string, unknown>>("GET", "/openapi.json");
  }

  /** Releases the kept-alive connections. */
  close(): void {
    this.transport.close();
  }
}
