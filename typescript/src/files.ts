/**
 * Files of a session: list, stat, read and write (streamed both ways in constant memory),
 * several files at once, tar archives, delete, mkdir, move.
 */

import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable, Transform, pipeline as pipe } from "node:stream";
import { pipeline } from "node:stream/promises";

import { NotFoundError } from "./errors.js";
import type { Body, Transport } from "./transport.js";
import type { Schemas } from "./types.js";

/** One file or directory of a session. */
export type FileInfo = Schemas["FileInfo"];

/** What an upload wrote, per file. */
export type UploadResult = Schemas["UploadResult"];

/** Called as `onProgress(bytesDone, bytesTotal)`; `bytesTotal` is undefined when unknown. */
export type ProgressCallback = (done: number, total: number | undefined) => void;

/** Options of a file write. */
export interface WriteOptions {
  /** Create missing parent directories; default true (false: 404 when one is missing). */
  parents?: boolean;
  /** Replace an existing file; default true (false: 409 when it exists). */
  overwrite?: boolean;
  /** Permission bits, octal (`"0644"`, the default). */
  mode?: string;
  /** The byte count of a streamed body, when known (sent as `Content-Length`). */
  size?: number;
  /** Follows the bytes as they go out. */
  onProgress?: ProgressCallback;
  /** Milliseconds the upload may wait for the server; default the client's timeout. */
  timeoutMs?: number;
}

/** Options of a file read. */
export interface ReadOptions {
  /** Only the bytes from `start` (inclusive)… */
  start?: number;
  /** …to `end` (inclusive): one HTTP range. */
  end?: number;
  /** Follows the bytes as they come in. */
  onProgress?: ProgressCallback;
}

/** The filesystem of one session (`/sessions/{id}/files…`). */
export class Files {
  private readonly base: string;

  constructor(private readonly transport: Transport, sessionPath: string) {
    this.base = `${sessionPath}/files`;
  }

  /** The entries below directory `path` (default `/workspace`), `depth` levels (default 1). */
  async list(path = "/workspace", options: { depth?: number } = {}): Promise<FileInfo[]> {
    const data = await this.transport.json<Schemas["FileList"]>("GET", this.base, {
      query: { path, depth: options.depth },
    });
    return data.entries;
  }

  /** What `path` is. */
  stat(path: string): Promise<FileInfo> {
    return this.transport.json<FileInfo>("GET", `${this.base}/stat`, { query: { path } });
  }

  /** Whether `path` exists. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path);
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  }

  /**
   * The content of file `path` as a Node stream, read from the server as it is consumed (a
   * file of any size in constant memory).
   */
  async readStream(path: string, options: ReadOptions = {}): Promise<Readable> {
    const headers: Record<string, string> = {};
    if (options.start !== undefined || options.end !== undefined) {
      const start = options.start ?? 0;
      const end = options.end;
      if (!Number.isInteger(start) || start < 0 || (end !== undefined && (!Number.isInteger(end) || end < start))) {
        // A server ignores a range it cannot parse and sends the whole file.
        throw new RangeError(`start and end must be whole numbers with 0 <= start <= end, got ${start} and ${end}`);
      }
      headers.range = `bytes=${start}-${end ?? ""}`;
    }
    const response = await this.transport.request("GET", `${this.base}/content`, {
      query: { path },
      headers,
    });
    const onProgress = options.onProgress;
    if (!onProgress) return response;
    const length = Number.parseInt(response.headers["content-length"] ?? "", 10);
    return response.pipe(progress(Number.isFinite(length) ? length : undefined, onProgress));
  }

  /** The content of file `path`. */
  async read(path: string, options: ReadOptions = {}): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of await this.readStream(path, options)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /** The content of file `path` as UTF-8 text. */
  async readText(path: string): Promise<string> {
    return (await this.read(path)).toString("utf8");
  }

  /** Downloads file `path` into the local file `destination`; resolves with the byte count. */
  async downloadFile(path: string, destination: string, options: ReadOptions = {}): Promise<number> {
    let bytes = 0;
    const source = await this.readStream(path, options);
    const count = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    await pipeline(source, count, createWriteStream(destination));
    return bytes;
  }

  /**
   * Writes `data` to `path`: text, bytes, or a stream (a Node `Readable` or any async iterable
   * of bytes) sent as it is read, in constant memory. The server writes to a temporary file
   * and renames it over `path` once complete, so a failed upload leaves nothing.
   */
  async write(path: string, data: Body, options: WriteOptions = {}): Promise<UploadResult> {
    let body = typeof data === "string" ? Buffer.from(data) : data;
    const size = body instanceof Uint8Array ? body.byteLength : options.size;
    if (size !== undefined && !(body instanceof Uint8Array)) {
      // A stream sent as `size` bytes must be exactly that long: a shorter or longer one
      // would cut the file, hang the request, or put its rest on the kept connection.
      const source = body instanceof Readable ? body : Readable.from(body, { objectMode: false });
      body = pipe(source, exactly(size), () => undefined);
    }
    if (options.onProgress) {
      const source = body instanceof Readable ? body : Readable.from(body instanceof Uint8Array ? [body] : body, { objectMode: false });
      options.onProgress(0, size);
      // Errors of the source reach the counting stream, and from there the request.
      body = pipe(source, progress(size, options.onProgress), () => undefined);
    }
    const answer = await this.transport.json<Schemas["UploadResults"]>("PUT", `${this.base}/content`, {
      query: {
        path,
        parents: options.parents === false ? "false" : undefined,
        overwrite: options.overwrite === false ? "false" : undefined,
        mode: options.mode,
      },
      body,
      contentLength: size,
      timeoutMs: options.timeoutMs,
    });
    return answer.files[0] ?? { path, size: size ?? 0 };
  }

  /** Uploads the local file `source` to `path`, streamed. */
  async uploadFile(source: string, path: string, options: WriteOptions = {}): Promise<UploadResult> {
    const { size } = await stat(source);
    return this.write(path, createReadStream(source), { ...options, size });
  }

  /**
   * Writes several files in one `multipart/form-data` request: `{"/workspace/a.txt": "…"}`.
   * Each file's result says whether it was written (`error` when not).
   */
  async writeMany(
    files: Record<string, string | Uint8Array>,
    options: { parents?: boolean } = {},
  ): Promise<UploadResult[]> {
    const boundary = `hutch-${randomBytes(12).toString("hex")}`;
    const parts: Buffer[] = [];
    for (const [path, content] of Object.entries(files)) {
      const name = path.replace(/["\r\n]/g, encodeURIComponent);
      parts.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n` +
            "Content-Type: application/octet-stream\r\n\r\n",
        ),
        typeof content === "string" ? Buffer.from(content) : Buffer.from(content),
        Buffer.from("\r\n"),
      );
    }
    parts.push(Buffer.from(`--${boundary}--\r\n`));
    const answer = await this.transport.json<Schemas["UploadResults"]>("POST", this.base, {
      query: { parents: options.parents === false ? "false" : undefined },
      body: Buffer.concat(parts),
      contentType: `multipart/form-data; boundary=${boundary}`,
    });
    return answer.files;
  }

  /** Deletes a file, a symlink, or a directory (`recursive` when it is not empty). */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    const response = await this.transport.request("DELETE", this.base, {
      query: { path, recursive: options.recursive ? "true" : undefined },
    });
    response.resume();
  }

  /** Creates a directory (with its parents, and no error when it exists, by default). */
  mkdir(path: string, options: { parents?: boolean; mode?: string } = {}): Promise<FileInfo> {
    const body: Schemas["MkdirRequest"] = { path, parents: options.parents ?? true };
    if (options.mode !== undefined) body.mode = options.mode;
    return this.transport.json<FileInfo>("POST", `${this.base}/mkdir`, { json: body });
  }

  /**
   * Moves or renames `from` to `to` (409 when `to` exists, unless `overwrite`). Missing
   * parents of `to` are created unless `parents` is false.
   */
  move(from: string, to: string, options: { overwrite?: boolean; parents?: boolean } = {}): Promise<FileInfo> {
    const body: Schemas["MoveRequest"] = {
      from,
      to,
      overwrite: options.overwrite ?? false,
      parents: options.parents ?? true,
    };
    return this.transport.json<FileInfo>("POST", `${this.base}/move`, { json: body });
  }

  /** Directory `path` as a tar archive, streamed as it is read. */
  archive(path: string): Promise<Readable> {
    return this.transport.request("GET", `${this.base}/archive`, { query: { path } });
  }

  /** Extracts a tar archive (bytes or a stream) into directory `path`, created when missing. */
  async extractArchive(
    path: string,
    tar: Body,
    options: { parents?: boolean; size?: number } = {},
  ): Promise<Schemas["UploadResults"]> {
    return this.transport.json<Schemas["UploadResults"]>("PUT", `${this.base}/archive`, {
      query: { path, parents: options.parents === false ? "false" : undefined },
      body: tar,
      contentType: "application/x-tar",
      contentLength: options.size,
    });
  }
}

/** A pass-through stream that fails unless exactly `size` bytes go through it. */
function exactly(size: number): Transform {
  let done = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, next) {
      done += chunk.length;
      if (done > size) {
        next(new RangeError(`the body is longer than its size option of ${size} bytes`));
        return;
      }
      next(null, chunk);
    },
    flush(next) {
      next(done === size ? null : new RangeError(`the body ended after ${done} bytes, short of its size option of ${size}`));
    },
  });
}

/** A pass-through stream that reports the bytes that went through it. */
function progress(total: number | undefined, callback: ProgressCallback): Transform {
  let done = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, next) {
      done += chunk.length;
      callback(done, total);
      next(null, chunk);
    },
  });
}
