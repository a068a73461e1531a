/**
 * The hutch web console: log in, the live sessions list, one session (terminal, files,
 * processes, notebook, storage tasks) and the storage contexts. Routes are the URL's hash:
 * `#/sessions`, `#/session/{id}/{tab}`, `#/contexts`.
 */
import { type Login, type Schemas, currentLogin, json, loginWithToken, logout, saveLogin } from "./api.js";
import { attempt, duration, field, h, replace, say, size } from "./dom.js";
import { showSession } from "./session.js";

const main = document.getElementById("main") as HTMLElement;
/** Stops the current page's timers and sockets when another page opens. */
let leave: (() => void) | undefined;

/** A login link lands on `#csrf=…&tenant=…&admin=…`: keep it, then clean the URL. */
function takeLinkLogin(): void {
  const params = new URLSearchParams(location.hash.slice(1));
  const csrf = params.get("csrf");
  if (!csrf) return;
  saveLogin({ csrf, tenant: params.get("tenant") ?? "", admin: params.get("admin") === "true" });
  history.replaceState(null, "", "#/sessions");
}

function route(): void {
  leave?.();
  leave = undefined;
  say("");
  const login = currentLogin();
  showWho(login);
  if (!login) return showLogin();
  const [, page, id, tab] = location.hash.split("/");
  if (page === "session" && id) leave = showSession(main, id, tab ?? "terminal");
  else if (page === "contexts") leave = showContexts();
  else leave = showSessions();
  main.focus({ preventScroll: true });
}

/** Marks, once, the moment the first page is usable (the performance timeline's entry). */
function markInteractive(): void {
  if (!performance.getEntriesByName("console-interactive").length) performance.mark("console-interactive");
}

function showWho(login: Login | undefined): void {
  const who = document.getElementById("who") as HTMLElement;
  who.textContent = login ? `${login.tenant}${login.admin ? " (admin)" : ""}` : "";
  (document.getElementById("logout") as HTMLButtonElement).hidden = !login;
}

function showLogin(): void {
  const token = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
  const form = h(
    "form",
    { class: "card login", "aria-label": "Log in" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Paste a token (", h("code", {}, "hutch token --sub TENANT"), "), or open a link from ", h("code", {}, "hutch console-link"), "."),
    field("Token", token),
    h("button", { type: "submit" }, "Log in"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void attempt("Logging in", async () => {
      await loginWithToken(token.value.trim());
      location.hash = "#/sessions";
      route();
    });
  });
  replace(main, form);
  token.focus();
}

/** Status filter, metadata filter and the create form, kept while the list refreshes. */
function showSessions(): () => void {
  const status = h(
    "select",
    { id: "filter-status" },
    ...["", "RUNNING", "PAUSED", "CREATING", "DELETING"].map((s) => h("option", { value: s }, s || "any status")),
  );
  const meta = h("input", { id: "filter-meta", placeholder: "key=value", size: 14 });
  const body = h("tbody");
  const count = h("span", { class: "muted" });
  const table = h(
    "table",
    { class: "list", "aria-label": "Sessions" },
    h("thead", {}, h("tr", {}, ...["Session", "Status", "Image", "Age", "TTL left", "Memory", "CPU", "Metadata", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    body,
  );
  replace(
    main,
    h("h1", {}, "Sessions ", count),
    createForm(() => void refresh()),
    h("div", { class: "filters" }, field("Status", status), field("Metadata", meta)),
    h("div", { class: "scroll" }, table),
  );
  const stats = new Map<string, Schemas["SessionStats"]>();
  let sessions: Schemas["Session"][] = [];
  const render = (): void => {
    const wanted = meta.value.trim();
    const [key, value] = wanted.split("=");
    const shown = sessions.filter(
      (s) => !wanted || (key in s.metadata && (value === undefined || s.metadata[key] === value)),
    );
    count.textContent = `(${shown.length})`;
    replace(body, ...shown.map((s) => row(s, stats.get(s.sessionId), () => void refresh())));
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No sessions.")));
    markInteractive();
  };
  const refresh = async (): Promise<void> => {
    const list = await attempt("Listing sessions", () =>
      json<Schemas["SessionList"]>("GET", "/sessions", { query: { limit: 100, status: status.value || undefined } }),
    );
    if (!list) return;
    sessions = list.sessions;
    await Promise.all(
      sessions
        .filter((s) => s.status === "RUNNING")
        .map(async (s) => {
          try {
            stats.set(s.sessionId, await json<Schemas["SessionStats"]>("GET", `/sessions/${s.sessionId}/stats`));
          } catch {
            stats.delete(s.sessionId);
          }
        }),
    );
    render();
  };
  status.addEventListener("change", () => void refresh());
  meta.addEventListener("input", render);
  void refresh();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") void refresh();
  }, 3000);
  return () => clearInterval(timer);
}

function row(s: Schemas["Session"], stats: Schemas["SessionStats"] | undefined, changed: () => void): HTMLTableRowElement {
  const id = s.sessionId;
  const age = (Date.now() - Date.parse(s.createdAt)) / 1000;
  const left = (Date.parse(s.expiresAt) - Date.now()) / 1000;
  const act = (label: string, what: string, work: () => Promise<unknown>): HTMLButtonElement =>
    h("button", {
      type: "button",
      "aria-label": `${label} ${id}`,
      onclick: () =>
        void attempt(what, async () => {
          await work();
          say(`${what}: done`);
          changed();
        }),
    }, label);
  return h(
    "tr",
    { "data-session": id },
    h("td", {}, h("a", { href: `#/session/${id}/terminal`, class: "mono" }, id.slice(0, 8))),
    h("td", {}, h("span", { class: `badge ${s.status.toLowerCase()}` }, s.status)),
    h("td", {}, s.image),
    h("td", {}, duration(age)),
    h("td", {}, duration(left)),
    h("td", {}, stats ? size(stats.memoryBytes) : "–"),
    h("td", {}, stats ? `${stats.cpuSeconds.toFixed(1)} s` : "–"),
    h("td", { class: "mono" }, Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(" ")),
    h(
      "td",
      { class: "actions" },
      act("+10 min", "Extending", () => json("PATCH", `/sessions/${id}`, { json: { ttl: Math.min(28800, Math.max(60, Math.round(left) + 600)) } })),
      s.status === "PAUSED"
        ? act("Resume", "Resuming", () => json("POST", `/sessions/${id}/resume`))
        : act("Pause", "Pausing", () => json("POST", `/sessions/${id}/pause`)),
      h("button", {
        type: "button",
        class: "danger",
        "aria-label": `Delete ${id}`,
        onclick: () => {
          if (!confirm(`Delete session ${id}? Everything in it is lost.`)) return;
          void attempt("Deleting", async () => {
            await json("DELETE", `/sessions/${id}`);
            say(`Deleted ${id}`);
            changed();
          });
        },
      }, "Delete"),
    ),
  );
}

function createForm(created: () => void): HTMLElement {
  const image = h("input", { id: "new-image", value: "default", size: 10 });
  const ttl = h("input", { id: "new-ttl", type: "number", min: 60, max: 28800, value: 600 });
  const cpus = h("input", { id: "new-cpus", type: "number", min: 0.05, max: 64, step: 0.05, placeholder: "default" });
  const memory = h("input", { id: "new-memory", type: "number", min: 32, max: 65536, placeholder: "default" });
  const network = h("select", { id: "new-network" }, h("option", { value: "none" }, "none"), h("option", { value: "all" }, "all"));
  const metadata = h("input", { id: "new-metadata", placeholder: "key=value,…", size: 14 });
  const form = h(
    "form",
    { class: "card create", "aria-label": "Create a session" },
    field("Image", image),
    field("TTL (s)", ttl),
    field("CPUs", cpus),
    field("Memory (MiB)", memory),
    field("Network", network),
    field("Metadata", metadata),
    h("button", { type: "submit", id: "create" }, "Create session"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const resources: Record<string, number> = {};
    if (cpus.value) resources.cpus = Number(cpus.value);
    if (memory.value) resources.memoryMb = Number(memory.value);
    const labels = Object.fromEntries(
      metadata.value.split(",").map((pair) => pair.trim().split("=")).filter(([k, v]) => k && v !== undefined),
    );
    const request: Schemas["CreateSessionRequest"] = {
      image: image.value || undefined,
      ttl: Number(ttl.value) || undefined,
      resources: Object.keys(resources).length ? resources : undefined,
      metadata: Object.keys(labels).length ? labels : undefined,
      network: network.value === "none" ? undefined : { egress: "all", allow: [], deny: [] },
    };
    void attempt("Creating a session", async () => {
      say("Creating a session…");
      const session = await json<Schemas["Session"]>("POST", "/sessions", { json: request });
      say(`Created ${session.sessionId}`);
      created();
    });
  });
  return form;
}

function showContexts(): () => void {
  const body = h("tbody");
  replace(
    main,
    h("h1", {}, "Storage contexts"),
    h("div", { class: "scroll" }, h(
      "table",
      { class: "list", "aria-label": "Storage contexts" },
      h("thead", {}, h("tr", {}, ...["Name", "Id", "Size", "Version", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    )),
    h("p", { class: "muted" }, "A session's transfer tasks are on its Storage tab."),
  );
  void attempt("Listing storage contexts", async () => {
    const list = await json<Schemas["StorageContextList"]>("GET", "/contexts", { query: { limit: 100 } });
    replace(body, ...list.contexts.map((c) =>
      h("tr", {}, h("td", {}, c.name), h("td", { class: "mono" }, c.id), h("td", {}, size(c.sizeBytes)), h("td", {}, c.version), h("td", {}, new Date(c.updatedAt).toLocaleString())),
    ));
    if (!list.contexts.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No storage contexts.")));
  });
  return () => undefined;
}

function setupTheme(): void {
  const system = matchMedia("(prefers-color-scheme: dark)");
  const apply = (): void => {
    const saved = localStorage.getItem("hutch.console.theme");
    document.documentElement.dataset.theme = saved ?? (system.matches ? "dark" : "light");
  };
  apply();
  system.addEventListener("change", apply);
  document.getElementById("theme")?.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem("hutch.console.theme", next);
    apply();
  });
  document.getElementById("logout")?.addEventListener("click", () => {
    void logout().then(() => {
      location.hash = "";
      route();
    });
  });
}

takeLinkLogin();
setupTheme();
window.addEventListener("hashchange", route);
route();
if (!currentLogin()) markInteractive();
