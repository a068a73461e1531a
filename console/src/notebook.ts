/**
 * The notebook: a tab per interpreter context, cells run with `POST …/interpreter/execute`
 * (NDJSON frames as they come), rich results (HTML tables, PNG figures, tracebacks),
 * interrupt, restart and the context's history.
 */
import { type Schemas, call, json, ndjson } from "./api.js";
import { attempt, h, replace, say } from "./dom.js";

type Frame = Schemas["Frame"];

/** Control sequences of a terminal (a traceback's colours). */
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g;

/** Elements an HTML result keeps (a pandas table); everything else is reduced to its text. */
const KEPT = new Set(["TABLE", "THEAD", "TBODY", "TFOOT", "TR", "TH", "TD", "CAPTION", "B", "I", "EM", "STRONG", "BR", "P", "SPAN", "DIV", "CODE", "PRE"]);

/** An HTML result as elements of {@link KEPT} and text only: no attribute, script or style. */
export function safeHtml(html: string): HTMLElement {
  const parsed = new DOMParser().parseFromString(html, "text/html");
  const copy = (node: Node, into: Node): void => {
    for (const child of Array.from(node.childNodes)) {
      if (child.nodeType === Node.TEXT_NODE) {
        into.appendChild(document.createTextNode(child.textContent ?? ""));
      } else if (child instanceof Element) {
        if (child.tagName === "STYLE" || child.tagName === "SCRIPT") continue;
        if (KEPT.has(child.tagName)) {
          const element = document.createElement(child.tagName.toLowerCase());
          copy(child, element);
          into.appendChild(element);
        } else {
          copy(child, into);
        }
      }
    }
  };
  const root = h("div", { class: "html-result" });
  copy(parsed.body, root);
  return root;
}

/** One frame as elements. */
function render(frame: Frame): HTMLElement | undefined {
  switch (frame.type) {
    case "stdout":
    case "stderr":
      return h("pre", { class: frame.type }, frame.text);
    case "result": {
      const data = frame.data as Record<string, string>;
      if (data["image/png"]) return h("img", { src: `data:image/png;base64,${data["image/png"]}`, alt: "figure", class: "figure" });
      if (data["text/html"]) return safeHtml(data["text/html"]);
      return h("pre", { class: "result" }, data["text/plain"] ?? JSON.stringify(data));
    }
    case "artifact":
      if (frame.mimeType.startsWith("image/")) {
        return h("img", { src: `data:${frame.mimeType};base64,${frame.data}`, alt: frame.name, class: "figure" });
      }
      return h("p", { class: "muted" }, `artifact ${frame.name} (${frame.mimeType})`);
    case "error":
      return h("pre", { class: "traceback" }, (frame.traceback || `${frame.name}: ${frame.value}`).replace(ANSI, ""));
    case "control":
      return frame.text === "completed"
        ? undefined
        : h("p", { class: "muted" }, `[${frame.text}]`);
    default:
      return undefined;
  }
}

/** Shows the notebook of session `id`; answers the function that leaves it. */
export function showNotebook(panel: HTMLElement, id: string): () => void {
  const tabs = h("div", { class: "tabs small", role: "tablist", "aria-label": "Interpreter contexts" });
  const language = h("select", { id: "new-context-language", "aria-label": "Language" },
    ...["python", "javascript", "bash"].map((l) => h("option", { value: l }, l)));
  const cells = h("div", { class: "cells", id: "cells" });
  const history = h("div", { class: "history" });
  let context = "default";
  const toolbar = h(
    "div",
    { class: "inline" },
    language,
    h("button", { type: "button", onclick: () => void create() }, "New context"),
    h("button", { type: "button", id: "interrupt", onclick: () => void control("interrupt") }, "Interrupt"),
    h("button", { type: "button", id: "restart", onclick: () => void control("restart") }, "Restart"),
    h("button", { type: "button", id: "load-history", onclick: () => void loadHistory() }, "History"),
  );
  replace(panel, tabs, toolbar, cells, h("h2", {}, "History"), history);

  const contexts = async (): Promise<void> => {
    const list = await attempt("Listing contexts", () => json<Schemas["ContextList"]>("GET", `/sessions/${id}/interpreter/contexts`));
    if (!list) return;
    const ids = list.contexts.map((c) => c.id);
    if (!ids.includes("default")) ids.unshift("default");
    replace(tabs, ...ids.map((cid) => {
      const info = list.contexts.find((c) => c.id === cid);
      return h("button", {
        type: "button",
        role: "tab",
        "aria-selected": cid === context ? "true" : "false",
        onclick: () => {
          context = cid;
          void contexts();
          replace(cells, newCell());
          replace(history);
        },
      }, `${cid}${info ? ` · ${info.language}` : ""}`);
    }));
  };
  const create = (): Promise<unknown> =>
    attempt("Creating a context", async () => {
      const made = await json<Schemas["Context"]>("POST", `/sessions/${id}/interpreter/contexts`, { json: { language: language.value } });
      context = made.id;
      await contexts();
      replace(cells, newCell());
    });
  const control = (what: "interrupt" | "restart"): Promise<unknown> =>
    attempt(what === "interrupt" ? "Interrupting" : "Restarting", async () => {
      await call("POST", `/sessions/${id}/interpreter/contexts/${encodeURIComponent(context)}/${what}`);
      say(`${context}: ${what === "interrupt" ? "interrupted" : "restarted"}`);
    });
  const loadHistory = (): Promise<unknown> =>
    attempt("Reading the history", async () => {
      const list = await json<Schemas["HistoryList"]>("GET", `/sessions/${id}/interpreter/contexts/${encodeURIComponent(context)}/history`, { query: { limit: 50 } });
      replace(history, ...list.executions.map((e) =>
        h("details", {},
          h("summary", {}, `[${e.executionCount ?? "–"}] ${e.status} · ${e.durationMs} ms · ${e.code.split("\n")[0]}`),
          h("pre", { class: "code" }, e.code),
          e.stdout ? h("pre", { class: "stdout" }, e.stdout) : null,
          e.stderr ? h("pre", { class: "stderr" }, e.stderr) : null,
          ...e.results.map((data) => render({ type: "result", data } as Frame)),
          e.error ? render(e.error) : null),
      ));
      if (!list.executions.length) history.append(h("p", { class: "muted" }, "Nothing ran in this context yet."));
    });

  const newCell = (): HTMLElement => {
    const code = h("textarea", { class: "code", rows: 4, "aria-label": "Code (Ctrl+Enter runs)", spellcheck: "false" });
    const out = h("div", { class: "out", "aria-live": "polite" });
    const run = h("button", { type: "button", class: "run" }, "Run");
    const cell = h("div", { class: "cell" }, h("div", { class: "inline" }, code, run), out);
    const execute = async (): Promise<void> => {
      run.disabled = true;
      replace(out);
      try {
        const response = await call("POST", `/sessions/${id}/interpreter/execute`, { json: { code: code.value, contextId: context } });
        for await (const frame of ndjson<Frame>(response)) {
          const element = render(frame);
          if (element) out.append(element);
        }
      } catch (error) {
        out.append(h("pre", { class: "traceback" }, error instanceof Error ? error.message : String(error)));
      } finally {
        run.disabled = false;
      }
      if (cell === cells.lastElementChild) cells.append(newCell());
    };
    run.addEventListener("click", () => void execute());
    code.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.shiftKey || e.metaKey)) {
        e.preventDefault();
        void execute();
      }
    });
    return cell;
  };
  void contexts();
  cells.append(newCell());
  return () => undefined;
}
