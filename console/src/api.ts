/**
 * The console's client of the hutch API: `fetch` with the login's credentials, the SDK's
 * typed errors, the API's schemas (the SDK's generated types), and WebSocket URLs.
 *
 * A login is a pasted token (sent as the bearer token) or a login link (the server's
 * `HttpOnly` cookie); either way the page holds the cookie's CSRF token, sent on every call
 * the cookie authenticates and in the URL of every WebSocket.
 */
import { type ApiError, errorFromResponse } from "../../typescript/src/errors.js";
import type { components } from "../../typescript/src/generated/openapi.js";

/** The API's schemas. */
export type Schemas = components["schemas"];
export type { ApiError };

/** What a login leaves in the tab's session storage. */
export interface Login {
  /** The pasted token, when the login was one (a login link leaves none). */
  token?: string;
  /** The CSRF token of the console's cookie. */
  csrf: string;
  /** The tenant. */
  tenant: string;
  /** Whether the token sees every tenant. */
  admin: boolean;
}

const KEY = "hutch.console.login";

/** The tab's login, or undefined. */
export function currentLogin(): Login | undefined {
  const text = sessionStorage.getItem(KEY);
  if (!text) return undefined;
  try {
    return JSON.parse(text) as Login;
  } catch {
    return undefined;
  }
}

/** Keeps `login` for this tab. */
export function saveLogin(login: Login): void {
  sessionStorage.setItem(KEY, JSON.stringify(login));
}

/** Forgets the login here and on the server (the cookie). */
export async function logout(): Promise<void> {
  sessionStorage.removeItem(KEY);
  await fetch("/console/session", { method: "DELETE" });
}

/** Logs in with a pasted token: the server checks it and sets the cookie. */
export async function loginWithToken(token: string): Promise<Login> {
  const response = await fetch("/console/session", {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  const text = await response.text();
  if (!response.ok) throw errorOf(response, text);
  const session = JSON.parse(text) as { csrf: string; tenant: string; admin: boolean };
  const login = { token, ...session };
  saveLogin(login);
  return login;
}

/** Query parameters. */
export type Query = Record<string, string | number | boolean | undefined>;

/** `/v1{path}?{query}` as a URL of this origin. */
export function apiUrl(path: string, query: Query = {}): URL {
  const url = new URL(`/v1${path}`, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined) url.searchParams.set(name, String(value));
  }
  return url;
}

/** The headers that authenticate a call. */
export function authHeaders(): Record<string, string> {
  const login = currentLogin();
  if (!login) return {};
  return login.token ? { authorization: `Bearer ${login.token}` } : { "x-hutch-csrf": login.csrf };
}

function errorOf(response: Response, text: string): ApiError {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => (headers[name] = value));
  return errorFromResponse(response.status, headers, text);
}

/** Calls the API; resolves with the raw response when it succeeded, else throws its error. */
export async function call(
  method: string,
  path: string,
  options: { query?: Query; json?: unknown; body?: BodyInit; headers?: Record<string, string> } = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...authHeaders(), ...options.headers };
  let body = options.body;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  const response = await fetch(apiUrl(path, options.query), { method, headers, body });
  if (!response.ok) throw errorOf(response, await response.text());
  return response;
}

/** Calls the API and parses its JSON answer. */
export async function json<T>(method: string, path: string, options: Parameters<typeof call>[2] = {}): Promise<T> {
  const response = await call(method, path, options);
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** A WebSocket to `/v1{path}`, authenticated by the cookie and its CSRF token. */
export function openSocket(path: string, query: Query = {}): WebSocket {
  const url = apiUrl(path, { ...query, hutch_csrf: currentLogin()?.csrf });
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  return socket;
}

/** Uploads `file` to `path` with `PUT …/files/content`, reporting progress (0 to 1). */
export function upload(sessionId: string, path: string, file: Blob, onProgress: (done: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    const url = apiUrl(`/sessions/${sessionId}/files/content`, { path, overwrite: true, parents: true });
    request.open("PUT", url);
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.setRequestHeader("content-type", "application/octet-stream");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) {
        onProgress(1);
        resolve();
      } else {
        reject(errorFromResponse(request.status, {}, request.responseText));
      }
    };
    request.onerror = () => reject(new Error(`uploading ${path} failed`));
    request.send(file);
  });
}

/** Reads an NDJSON response line by line. */
export async function* ndjson<T>(response: Response): AsyncGenerator<T> {
  if (!response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield JSON.parse(line) as T;
    }
    if (done) break;
  }
  if (buffer.trim()) yield JSON.parse(buffer) as T;
}
