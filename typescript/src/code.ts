/** Stateless code runs: `POST /sessions/{id}/code` runs a snippet in a fresh process. */

import { CommandResult } from "./process-stream.js";
import { commandHttpTimeoutMs } from "./commands.js";
import type { Transport } from "./transport.js";
import type { Schemas } from "./types.js";

/** The languages the code route runs. */
export const LANGUAGES = ["python", "javascript", "bash"] as const;

/** A language the code route runs. */
export type Language = (typeof LANGUAGES)[number];

/** Options of {@link Code.run}. */
export interface CodeOptions {
  /** Seconds, in (0, 3600], before the run and everything it started is killed; default 60. */
  timeout?: number;
  /** Environment variables for the run. */
  env?: Record<string, string>;
}

/** Runs code in one session, each time in a fresh process (`/sessions/{id}/code`). */
export class Code {
  constructor(
    private readonly transport: Transport,
    private readonly sessionPath: string,
  ) {}

  /** Runs `code` written in `language` (`python`, `javascript` or `bash`) and waits for it. */
  async run(language: Language, code: string, options: CodeOptions = {}): Promise<CommandResult> {
    if (!(LANGUAGES as readonly string[]).includes(language)) {
      throw new RangeError(`language must be one of ${LANGUAGES.join(", ")}, got ${JSON.stringify(language)}`);
    }
    const body: Schemas["CodeRequest"] = { language, code };
    if (options.timeout !== undefined) {
      if (!(options.timeout > 0)) throw new RangeError(`timeout must be positive, got ${options.timeout}`);
      body.timeout = options.timeout;
    }
    if (options.env !== undefined) body.env = { ...options.env };
    const data = await this.transport.json<Schemas["CommandResult"]>("POST", `${this.sessionPath}/code`, {
      json: body,
      timeoutMs: commandHttpTimeoutMs(options.timeout),
    });
    return new CommandResult(data);
  }
}
