/**
 * One session's page: a tab per view (terminal, files, processes, notebook, storage tasks).
 * Each view returns the function that closes its sockets and timers.
 */
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";

import { type Schemas, call, json, openSocket, upload } from "./api.js";
import { attempt, field, h, replace, size } from "./dom.js";
import { showNotebook } from "./notebook.js";

const TABS: [string, string][] = [
  ["terminal", "Terminal"],
  ["files", "Files"],
  ["processes", "Processes"],
  ["notebook", "Notebook"],
  ["storage", "Storage"],
];

/** Shows session `id` with `tab` open; answers the function that leaves it. */
export function showSession(main: HTMLElement, id: string, tab: string): () => void {
  const panel = h("section", { class: "panel", role: "tabpanel", id: "panel" });
  const tabs = h(
    "nav",
    { class: "tabs", role: "tablist", "aria-label": "Session views" },
    ...TABS.map(([name, label]) =>
      h("a", { role: "tab", href: `#/session/${id}/${name}`, "aria-selected": name === tab ? "true" : "false", id: `tab-${name}` }, label),
    ),
  );
  replace(main, h("h1", {}, "Session ", h("span", { class: "mono" }, id)), tabs, panel);
  switch (tab) {
    case "files":
      return showFiles(panel, id);
    case "processes":
      return showProcesses(panel, id);
    case "notebook":
      return showNotebook(panel, id);
    case "storage":
      return showStorage(panel, id);
    default:
      return showTerminal(panel, id);
  }
}

/** Colours of the terminal, from the page's own. */
function terminalTheme(): { background: string; foreground: string; cursor: string } {
  const style = getComputedStyle(document.documentElement);
  const get = (name: string): string => style.getPropertyValue(name).trim();
  return { background: get("--term-bg"), foreground: get("--term-fg"), cursor: get("--accent") };
}

function showTerminal(panel: HTMLElement, id: string): () => void {
  const box = h("div", { class: "terminal", id: "terminal" });
  const state = h("p", { class: "muted", id: "terminal-state" }, "Connecting…");
  replace(panel, state, box);
  const term = new Terminal({ fontSize: 14, cursorBlink: true, theme: terminalTheme(), scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const socket = openSocket(`/sessions/${id}/pty`, { cols: term.cols, rows: term.rows });
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  socket.onopen = () => {
    state.textContent = "Connected: closing this page hangs the terminal up.";
    term.focus();
  };
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) {
      term.write(decoder.decode(new Uint8Array(event.data), { stream: true }));
      return;
    }
    const frame = JSON.parse(String(event.data)) as { type?: string; exitCode?: number | null };
    if (frame.type === "exit") state.textContent = `The shell exited (${frame.exitCode ?? "signal"}).`;
  };
  socket.onclose = () => {
    if (!state.textContent?.startsWith("The shell")) state.textContent = "Disconnected.";
  };
  const typed = term.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  const resized = term.onResize(({ cols, rows }) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resize", cols, rows }));
  });
  const observer = new ResizeObserver(() => fit.fit());
  observer.observe(box);
  return () => {
    observer.disconnect();
    typed.dispose();
    resized.dispose();
    socket.close();
    term.dispose();
  };
}

/** `dir` joined with `name`. */
function join(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

function showFiles(panel: HTMLElement, id: string): () => void {
  let dir = "/workspace";
  const where = h("input", { id: "files-path", value: dir, "aria-label": "Directory" });
  const body = h("tbody");
  const progress = h("div", { class: "uploads", "aria-live": "polite" });
  const picker = h("input", { type: "file", multiple: true, id: "files-upload", "aria-label": "Upload files" });
  const drop = h(
    "div",
    { class: "drop", id: "files-drop", tabindex: 0 },
    "Drop files here to upload them into the directory, or ",
    picker,
  );
  const folder = h("input", { id: "files-folder", placeholder: "new folder name", size: 16 });
  const folderForm = h("form", { class: "inline" }, folder, h("button", { type: "submit" }, "New folder"));
  replace(
    panel,
    h("form", { class: "inline", id: "files-go" }, field("Directory", where), h("button", { type: "submit" }, "Open"),
      h("button", { type: "button", onclick: () => open(dir.replace(/\/[^/]+\/?$/, "") || "/") }, "Up")),
    h("div", { class: "scroll" }, h(
      "table",
      { class: "list", "aria-label": "Files" },
      h("thead", {}, h("tr", {}, ...["Name", "Size", "Modified", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    )),
    folderForm,
    drop,
    progress,
  );
  const open = (path: string): void => {
    dir = path;
    where.value = path;
    void list();
  };
  const list = async (): Promise<void> => {
    const listing = await attempt("Listing files", () =>
      json<Schemas["FileList"]>("GET", `/sessions/${id}/files`, { query: { path: dir, depth: 1 } }),
    );
    if (!listing) return;
    replace(body, ...listing.entries.map((entry) => {
      const isDir = entry.type === "directory";
      return h(
        "tr",
        { "data-file": entry.name },
        h("td", {}, isDir
          ? h("a", { href: "#", onclick: (e: Event) => { e.preventDefault(); open(entry.path); } }, `${entry.name}/`)
          : entry.name),
        h("td", {}, isDir ? "" : size(entry.size)),
        h("td", {}, new Date(entry.modifiedAt).toLocaleString()),
        h("td", { class: "actions" },
          isDir ? null : h("button", { type: "button", "aria-label": `Download ${entry.name}`, onclick: () => void download(entry) }, "Download"),
          h("button", {
            type: "button",
            class: "danger",
            "aria-label": `Delete ${entry.name}`,
            onclick: () => {
              if (!confirm(`Delete ${entry.path}${isDir ? " and everything in it" : ""}?`)) return;
              void attempt("Deleting", async () => {
                await call("DELETE", `/sessions/${id}/files`, { query: { path: entry.path, recursive: isDir } });
                await list();
              });
            },
          }, "Delete")),
      );
    }));
    if (!listing.entries.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "Empty directory.")));
  };
  const download = (entry: Schemas["FileInfo"]): Promise<unknown> =>
    attempt("Downloading", async () => {
      const response = await call("GET", `/sessions/${id}/files/content`, { query: { path: entry.path } });
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: entry.name });
      link.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    });
  const send = (files: FileList | null): void => {
    for (const file of Array.from(files ?? [])) {
      const bar = h("progress", { max: 1, value: 0, "aria-label": `Uploading ${file.name}` });
      const line = h("div", {}, `${file.name} `, bar);
      progress.append(line);
      void attempt(`Uploading ${file.name}`, async () => {
        await upload(id, join(dir, file.name), file, (done) => (bar.value = done));
        line.append(" done");
        await list();
      });
    }
  };
  where.form?.addEventListener("submit", (e) => {
    e.preventDefault();
    open(where.value || "/");
  });
  folderForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!folder.value) return;
    void attempt("Creating the folder", async () => {
      await call("POST", `/sessions/${id}/files/mkdir`, { json: { path: join(dir, folder.value), parents: true } });
      folder.value = "";
      await list();
    });
  });
  picker.addEventListener("change", () => send(picker.files));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    send(e.dataTransfer?.files ?? null);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") picker.click();
  });
  void list();
  return () => undefined;
}

function showProcesses(panel: HTMLElement, id: string): () => void {
  const body = h("tbody");
  const output = h("pre", { class: "output", id: "process-output", "aria-live": "polite" });
  const command = h("input", { id: "process-command", placeholder: "a command to start in the background", size: 40 });
  const start = h("form", { class: "inline" }, command, h("button", { type: "submit" }, "Start"));
  replace(
    panel,
    start,
    h("div", { class: "scroll" }, h(
      "table",
      { class: "list", "aria-label": "Processes" },
      h("thead", {}, h("tr", {}, ...["Id", "Pid", "Command", "Status", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    )),
    h("h2", {}, "Output"),
    output,
  );
  let socket: WebSocket | undefined;
  const attach = (pid: number): void => {
    socket?.close();
    output.textContent = "";
    const decode = (data: string): string => new TextDecoder().decode(Uint8Array.from(atob(data), (c) => c.charCodeAt(0)));
    socket = openSocket(`/sessions/${id}/processes/${pid}/stream`, { from: 0 });
    socket.onmessage = (event) => {
      const e = JSON.parse(String(event.data)) as { type: string; data?: string; exitCode?: number | null; firstAvailable?: number };
      if ((e.type === "stdout" || e.type === "stderr") && e.data) output.append(h("span", { class: e.type }, decode(e.data)));
      else if (e.type === "truncated") output.append(h("span", { class: "muted" }, `[output before ${e.firstAvailable} was dropped]\n`));
      else if (e.type === "exit") output.append(h("span", { class: "muted" }, `\n[exited ${e.exitCode ?? "by a signal"}]\n`));
    };
  };
  const list = async (): Promise<void> => {
    const processes = await attempt("Listing processes", () => json<Schemas["ProcessList"]>("GET", `/sessions/${id}/processes`));
    if (!processes) return;
    replace(body, ...processes.items.map((p) =>
      h("tr", {},
        h("td", {}, p.processId),
        h("td", {}, p.pid),
        h("td", { class: "mono" }, p.command.join(" ")),
        h("td", {}, p.status === "running" ? "running" : `exited ${p.exitCode ?? ""}`),
        h("td", { class: "actions" },
          h("button", { type: "button", "aria-label": `Output of ${p.pid}`, onclick: () => attach(p.pid) }, "Output"),
          p.status === "running"
            ? h("button", {
                type: "button",
                class: "danger",
                onclick: () => void attempt("Killing", async () => {
                  await call("DELETE", `/sessions/${id}/processes/${p.pid}`);
                  await list();
                }),
              }, "Kill")
            : null),
      ),
    ));
    if (!processes.items.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No processes.")));
  };
  start.addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt("Starting", async () => {
      const started = await json<Schemas["StartedProcess"]>("POST", `/sessions/${id}/commands`, {
        json: { command: command.value, background: true, timeout: 3600 },
      });
      await list();
      attach(started.pid);
    });
  });
  void list();
  const timer = setInterval(() => void list(), 3000);
  return () => {
    clearInterval(timer);
    socket?.close();
  };
}

function showStorage(panel: HTMLElement, id: string): () => void {
  const body = h("tbody");
  replace(
    panel,
    h("p", { class: "muted" }, "Transfers between this session and storage contexts, oldest first."),
    h("div", { class: "scroll" }, h(
      "table",
      { class: "list", "aria-label": "Storage tasks" },
      h("thead", {}, h("tr", {}, ...["Context", "Path", "Type", "Status", "Version", "Error"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    )),
  );
  void attempt("Reading the task log", async () => {
    const info = await json<Schemas["ContextInfo"]>("GET", `/sessions/${id}/context/info`);
    replace(body, ...info.contextStatusData.map((t) =>
      h("tr", {}, h("td", { class: "mono" }, t.contextId), h("td", {}, t.path), h("td", {}, t.taskType), h("td", {}, t.status), h("td", {}, t.version), h("td", {}, t.errorMessage)),
    ));
    if (!info.contextStatusData.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No transfers.")));
  });
  return () => undefined;
}
