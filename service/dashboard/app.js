// The asynctask dashboard: a small single-page app on the JSON API (docs/dashboard-api.md).
// Every value from the API reaches the page as a text node (el() below), never as HTML, so a
// task's data shows exactly what it holds, markup included.
"use strict";

const PRIORITIES = ["high", "normal", "low"];
const STATES = ["available", "running", "retrying", "completed", "failed", "cancelled"];
const LIST_STATES = ["available", "scheduled", ...STATES.slice(1)];
const session = { role: null, authRequired: false };
let skew = 0; // server clock minus this browser's, from the last answer's now / generated_at
let leaving = []; // what the current view must stop (timers, streams) when another one opens

// ---- small helpers -------------------------------------------------------------------------

/** An element with attributes ("on..." functions become listeners) and text or node children. */
function el(tag, attrs = {}, ...children) {
  const node = tag === "svg" || attrs.svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "svg" || value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const svg = (tag, attrs = {}, ...children) => el(tag, { ...attrs, svg: true }, ...children);
const main = () => document.getElementById("main");
/** Replace the page's content (arrays are flattened, null and undefined left out). */
const show = (...children) => main().replaceChildren(...children.flat(3).filter((c) => c !== null && c !== undefined));
const canAct = () => session.role === "admin";

/** Call the API; resolves to the parsed body, rejects with its `error`. A 401 shows the login. */
async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/api/session") checkSession().catch(() => {});
  if (!response.ok) throw new Error(answer.error || `${method} ${path}: HTTP ${response.status}`);
  const now = answer.now || answer.generated_at;
  if (now) skew = Date.parse(now) - Date.now();
  return answer;
}

function banner(text, ok = false) {
  const node = document.getElementById("banner");
  node.textContent = text || "";
  node.hidden = !text;
  node.classList.toggle("ok", ok);
}

const fmt = (n) => Number(n).toLocaleString();
/** A timestamp in the viewer's zone. */
const localTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

/** "12 s ago" / "in 3 min", measured against the server's clock. */
function age(iso) {
  if (!iso) return "";
  let s = Math.round((Date.now() + skew - Date.parse(iso)) / 1000);
  const future = s < 0;
  s = Math.abs(s);
  const text = s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min`
    : s < 86400 ? `${Math.floor(s / 3600)} h` : `${Math.floor(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}
// Ages carry their timestamp (data-at) so that one timer keeps every shown age current.
const when = (iso) => (iso ? el("span", { title: iso }, localTime(iso), " ",
  el("span", { class: "muted", "data-at": iso }, `(${age(iso)})`)) : "—");
setInterval(() => {
  for (const node of document.querySelectorAll("[data-at]")) node.textContent = `(${age(node.dataset.at)})`;
}, 5000);
const badge = (text, kind = text) => el("span", { class: `badge ${kind}` }, text);

/** Ask with the page's dialog; resolves true when confirmed. */
function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
}

/** Run an action from a button, once at a time, errors in the banner. The button is marked busy
 * rather than disabled: a disabled button drops the keyboard focus (and the dialog's return). */
async function act(button, work) {
  if (button.getAttribute("aria-busy") === "true") return;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    banner(error.message);
  } finally {
    button.removeAttribute("aria-busy");
  }
}

// ---- overview: live from /api/events -------------------------------------------------------

const queues = {}; // the newest pause state per priority (an action's answer beats an older event)

function keepQueue(q) {
  const known = queues[q.priority];
  if (!known || Date.parse(q.since || 0) >= Date.parse(known.since || 0)) queues[q.priority] = q;
}

function viewOverview() {
  const cells = {};
  const rows = PRIORITIES.map((p) => {
    cells[p] = { lag: el("td", { class: "num" }), workers: el("td", { class: "num" }), paused: el("td"), states: {} };
    const button = canAct() ? el("button", { type: "button", "data-priority": p }) : null;
    if (button) {
      button.addEventListener("click", () => act(button, async () => {
        keepQueue(await api("POST", `/api/queues/${p}/${queues[p]?.paused ? "resume" : "pause"}`));
        paintQueues();
      }));
    }
    cells[p].button = button;
    return el("tr", {}, el("th", { scope: "row" }, p),
      STATES.map((s) => (cells[p].states[s] = el("td", { class: "num", "data-state": s }, "…"))),
      cells[p].lag, cells[p].workers, cells[p].paused, canAct() ? el("td", {}, button) : null);
  });
  const cards = {
    failed: el("div", { class: "big", id: "failed-hour" }, "…"),
    created: el("div", { class: "big" }, "…"),
    completed: el("div", { class: "big" }, "…"),
    workers: el("div", { class: "big", id: "supervisors" }, "…"),
    slots: el("div", { class: "muted" }),
  };
  const warning = el("p", { class: "error", id: "no-workers-for", hidden: true });
  const chart = el("div", { id: "chart" });
  const updated = el("p", { class: "muted", id: "updated" }, "Connecting…");
  show(
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      el("div", { class: "card" }, "Failures, last hour", cards.failed),
      el("div", { class: "card" }, "Created, last hour", cards.created),
      el("div", { class: "card" }, "Completed, last hour", cards.completed),
      el("div", { class: "card" }, el("a", { href: "#/workers" }, "Supervisors alive / dead"), cards.workers,
        cards.slots)),
    warning,
    el("h2", {}, "Tasks per priority"),
    el("div", { class: "scroll" }, el("table", { id: "counts" },
      el("thead", {}, el("tr", {}, el("th", {}, "priority"), STATES.map((s) => el("th", { class: "num" }, s)),
        el("th", { class: "num" }, "queue lag"), el("th", { class: "num" }, "workers"), el("th", {}, "queue"), canAct() ? el("th", {}, "action") : null)),
      el("tbody", {}, rows))),
    el("h2", {}, "Created and completed per second, last 15 minutes"),
    el("div", { class: "legend" }, el("span", {}, el("span", { class: "swatch created" }), "created/s"),
      el("span", {}, el("span", { class: "swatch completed" }), "completed/s")),
    chart, updated);

  function paintQueues() {
    for (const p of PRIORITIES) {
      const paused = Boolean(queues[p]?.paused);
      cells[p].paused.replaceChildren(paused ? badge("paused") : badge("running", "alive"));
      if (cells[p].button) {
        cells[p].button.textContent = paused ? "Resume" : "Pause";
        cells[p].button.setAttribute("aria-label", `${paused ? "Resume" : "Pause"} ${p}`);
      }
    }
  }

  function paint(stats) {
    for (const p of PRIORITIES) {
      for (const s of STATES) cells[p].states[s].textContent = fmt(stats.counts[p]?.[s] ?? 0);
      cells[p].lag.textContent = `${(stats.queue_lag_seconds[p] ?? 0).toFixed(1)} s`;
      cells[p].workers.textContent = fmt(stats.workers[p] ?? 0);
      if (stats.paused?.[p]) keepQueue(stats.paused[p]);
    }
    paintQueues();
    cards.failed.textContent = fmt(stats.last_hour.failed);
    cards.created.textContent = fmt(stats.last_hour.created);
    cards.completed.textContent = fmt(stats.last_hour.completed);
    const sup = stats.supervisors;
    cards.workers.textContent = `${fmt(sup.alive)} / ${fmt(sup.dead)}`;
    cards.slots.textContent = `${fmt(sup.busy)} of ${fmt(sup.slots)} worker slots busy`;
    const starving = stats.due_without_workers || [];
    warning.hidden = !starving.length;
    warning.textContent = `Due tasks wait with no live worker for: ${starving.join(", ")}.`;
    chart.replaceChildren(drawChart(stats.per_minute, chart.clientWidth));
    updated.textContent = `Live · updated ${localTime(stats.generated_at)}`;
  }

  const events = new EventSource("/api/events");
  let down = false; // the banner says the database is away: the next good event clears it
  events.addEventListener("stats", (event) => {
    const stats = JSON.parse(event.data);
    skew = Date.parse(stats.generated_at) - Date.now();
    if (down) banner("");
    down = false;
    paint(stats);
  });
  events.addEventListener("unavailable", (event) => {
    down = true;
    banner(JSON.parse(event.data).error);
  });
  events.addEventListener("error", () => {
    updated.textContent = "Reconnecting…"; // the browser retries by itself every 2 s
    // A refused stream (a 401 once the session ended) is not retried: see who we are now.
    if (events.readyState === EventSource.CLOSED) checkSession().catch((error) => banner(error.message));
  });
  leaving.push(() => events.close());
}

/** created/s and completed/s per minute as an inline SVG line chart (no library needed). */
function drawChart(minutes, width) {
  // Drawn at the box's own pixel width, so the labels keep their size on a phone and a desktop.
  const W = Math.max(280, width || 640), H = 220, L = 44, R = 10, T = 10, B = 24;
  const series = ["created", "completed"];
  const top = Math.max(1, ...minutes.flatMap((m) => series.map((s) => m[`${s}_per_second`])));
  const x = (i) => L + (i * (W - L - R)) / Math.max(1, minutes.length - 1);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const label = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": "created and completed per second, per minute" });
  for (const v of [0, top / 2, top]) {
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v < 10 ? v.toFixed(1) : fmt(Math.round(v))));
  }
  if (minutes.length) {
    chart.append(svg("text", { x: L, y: H - 6 }, label(minutes[0].minute)),
      svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, `${label(minutes.at(-1).minute)} (now)`));
  }
  for (const s of series) {
    const points = minutes.map((m, i) => `${x(i).toFixed(1)},${y(m[`${s}_per_second`]).toFixed(1)}`);
    chart.append(svg("polyline", { class: s, points: points.join(" ") },
      svg("title", {}, `${s}/s: ${minutes.map((m) => m[`${s}_per_second`].toFixed(2)).join(", ")}`)));
  }
  return chart;
}

// ---- tasks: filters, keyset pages, bulk actions ------------------------------------------

const filters = { state: "", priority: "", type: "" };

function select(name, choices, changed) {
  const node = el("select", { name, id: `filter-${name}` }, el("option", { value: "" }, "any"),
    choices.map((c) => el("option", { value: c }, c)));
  node.value = filters[name];
  node.addEventListener("change", () => { filters[name] = node.value; changed(); });
  return el("label", { for: `filter-${name}` }, name, node);
}

function viewTasks() {
  const body = el("tbody");
  const older = el("button", { type: "button", id: "older", hidden: true }, "Older");
  const note = el("p", { class: "muted", id: "list-note" });
  const typeFilter = el("span");
  const search = el("input", { id: "search", type: "search", inputmode: "numeric", placeholder: "task id" });
  const go = el("form", { class: "filters", role: "search" },
    el("label", { for: "search" }, "search by id", search), el("button", { type: "submit" }, "Open"));
  go.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = search.value.trim();
    if (/^[0-9]{1,19}$/.test(id)) location.hash = `#/tasks/${id}`;
    else banner("A task id is a number.");
  });
  const bulk = canAct() ? el("div", { class: "actions" },
    ["retry", "cancel"].map((action) => {
      const button = el("button", { type: "button", id: `bulk-${action}`, class: action === "cancel" ? "danger" : "" },
        `${action === "retry" ? "Retry" : "Cancel"} all matching`);
      button.addEventListener("click", () => act(button, () => bulkAction(action)));
      return button;
    })) : null;
  show(el("h1", {}, "Tasks"),
    el("div", { class: "toolbar" }, el("div", { class: "filters" },
      select("state", LIST_STATES, restart), select("priority", PRIORITIES, restart), typeFilter), go),
    bulk,
    el("div", { class: "scroll" }, el("table", { id: "tasks" },
      el("thead", {}, el("tr", {}, ["id", "type", "priority", "state", "attempts", "created", "updated"]
        .map((h) => el("th", {}, h)))), body)),
    el("div", { class: "actions" }, older), note);

  api("GET", "/api/stats").then((stats) => typeFilter.replaceChildren(select("type", stats.types, restart)))
    .catch((error) => banner(error.message));

  let cursor = null; // the next older page; paging older stops the live refresh of the first page
  let paged = false;
  const query = (extra = {}) => {
    const params = new URLSearchParams({ limit: "50", ...extra });
    for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
    return `/api/tasks?${params}`;
  };
  const row = (t) => {
    const open = () => { location.hash = `#/tasks/${t.id}`; };
    return el("tr", { class: "link", "data-id": t.id, onclick: open },
      el("td", {}, el("a", { href: `#/tasks/${t.id}` }, t.id)), el("td", {}, t.type), el("td", {}, t.priority),
      el("td", {}, badge(t.state)), el("td", { class: "num" }, `${t.attempts}/${t.max_attempts}`),
      el("td", {}, when(t.inserted_at)), el("td", {}, when(t.updated_at)));
  };
  let shown = "";
  let asked = 0; // only the newest request's answer is shown (a filter may change meanwhile)
  async function first() {
    const mine = ++asked;
    const page = await api("GET", query());
    if (mine !== asked) return;
    const key = JSON.stringify(page.tasks.map((t) => [t.id, t.state, t.updated_at]));
    if (key !== shown) { // rebuild only on change, so keyboard focus survives quiet refreshes
      shown = key;
      body.replaceChildren(...page.tasks.map(row));
      cursor = page.next_cursor;
      older.hidden = !cursor;
      note.textContent = page.tasks.length ? "" : "No task matches.";
    }
  }
  // A filter changed: back to the newest page of the new filter (the selects keep their focus).
  function restart() {
    paged = false;
    shown = "";
    first().catch((error) => banner(error.message));
  }
  older.addEventListener("click", () => act(older, async () => {
    paged = true;
    const page = await api("GET", query({ cursor }));
    body.append(...page.tasks.map(row));
    cursor = page.next_cursor;
    older.hidden = !cursor;
    note.textContent = cursor ? "" : "No older tasks.";
  }));
  first().catch((error) => banner(error.message));
  // The first page refreshes every second (one indexed query) so new tasks show up at once.
  const timer = setInterval(() => {
    if (!paged && !document.hidden) first().catch((error) => banner(error.message));
  }, 1000);
  leaving.push(() => clearInterval(timer));

  async function bulkAction(action) {
    const chosen = Object.fromEntries(Object.entries(filters).filter(([, v]) => v));
    const preview = await api("POST", `/api/tasks/bulk/${action}`, { ...chosen, dry_run: true });
    const verb = action === "retry" ? "Retry" : "Cancel";
    const which = Object.entries({ state: preview.states.join(" or "), ...chosen })
      .map(([k, v]) => `${k} ${v}`).join(", ");
    if (preview.count === 0) return banner(`No task matches (${which}).`);
    const text = `${verb} ${fmt(preview.count)} task${preview.count === 1 ? "" : "s"}? (${which})`;
    if (!(await confirmDialog(text))) return;
    const done = await api("POST", `/api/tasks/bulk/${action}`, { ...chosen, dry_run: false });
    banner(`${action === "retry" ? "Retried" : "Cancelled"} ${fmt(done.count)} tasks.`, true);
    shown = "";
    await first();
  }
}

// ---- one task ------------------------------------------------------------------------------

const FINAL = ["completed", "failed", "cancelled"];

function viewTask(id) {
  show(el("h1", {}, `Task ${id}`), el("p", { class: "muted" }, "Loading…"));
  let timer = null;
  async function load() {
    const t = await api("GET", `/api/tasks/${id}`);
    const buttons = [];
    if (canAct() && !FINAL.includes(t.state)) buttons.push(["cancel", "Cancel", "danger"]);
    if (canAct() && ["failed", "cancelled"].includes(t.state)) buttons.push(["retry", "Retry", "primary"]);
    const pretty = (value) => JSON.stringify(value, null, 2);
    const fields = [["type", t.type], ["priority", t.priority], ["state", badge(t.state)],
      ["attempts", `${t.attempts} of ${t.max_attempts}`], ["scheduled", when(t.scheduled_at)],
      ["created", when(t.inserted_at)], ["updated", when(t.updated_at)],
      ["started", when(t.started_at)], ["finished", when(t.finished_at)]];
    show(
      el("p", {}, el("a", { href: "#/tasks" }, "← Tasks")),
      el("h1", {}, `Task ${t.id}`),
      el("dl", { class: "fields" }, fields.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      buttons.length ? el("div", { class: "actions" }, buttons.map(([action, label, kind]) => {
        const button = el("button", { type: "button", id: `task-${action}`, class: kind }, label);
        button.addEventListener("click", () => act(button, async () => {
          await api("POST", `/api/tasks/${t.id}/${action}`);
          banner(`Task ${t.id}: ${action === "retry" ? "retried" : "cancelled"}.`, true);
          await load();
          // The page was drawn anew: keep the keyboard on its next action (or its heading).
          (document.querySelector("main .actions button") || main()).focus();
        }));
        return button;
      })) : null,
      el("h2", {}, "data"), el("pre", { id: "task-data" }, pretty(t.data)),
      el("h2", {}, "result"), el("pre", { id: "task-result" }, t.result === undefined || t.result === null ? "—" : pretty(t.result)),
      el("h2", {}, "last error"), el("pre", { id: "task-error" }, t.last_error || "—"));
    clearTimeout(timer);
    if (!FINAL.includes(t.state)) timer = setTimeout(() => load().catch((e) => banner(e.message)), 2000);
  }
  load().catch((error) => show(el("h1", {}, `Task ${id}`), el("p", { class: "error" }, error.message)));
  leaving.push(() => clearTimeout(timer));
}

// ---- workers -------------------------------------------------------------------------------

function viewWorkers() {
  show(el("h1", {}, "Workers"), el("p", { class: "muted" }, "Loading…"));
  async function load() {
    const answer = await api("GET", "/api/workers");
    const hosts = new Map();
    for (const sup of answer.supervisors) hosts.set(sup.host, [...(hosts.get(sup.host) || []), sup]);
    const slot = (s) => el("tr", {},
      el("td", {}, s.slot), el("td", {}, s.priority), el("td", { class: "num" }, s.pid),
      el("td", {}, badge(s.status), s.alive ? null : [" ", badge("not beating", "dead")]),
      el("td", {}, s.task_id ? el("a", { href: `#/tasks/${s.task_id}` }, s.task_id) : "—"),
      el("td", {}, when(s.up_since)), el("td", { class: "num" }, s.restarts), el("td", {}, age(s.last_heartbeat)));
    const supervisor = (sup) => el("div", { class: "supervisor" },
      el("p", {}, el("strong", {}, `supervisor pid ${sup.pid}`), " ", badge(sup.alive ? "alive" : "dead"),
        el("span", { class: "muted" }, " · up since "), when(sup.up_since),
        el("span", { class: "muted" }, ` · last heartbeat ${age(sup.last_heartbeat)}`),
        sup.rescued_at ? el("span", { class: "muted" }, ` · tasks rescued ${age(sup.rescued_at)}`) : null),
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["slot", "priority", "pid", "status", "task", "up since", "restarts", "heartbeat"]
          .map((h) => el("th", {}, h)))),
        el("tbody", {}, sup.slots.map(slot)))));
    show(el("h1", {}, "Workers"),
      el("p", { class: "muted" }, `Heartbeats every ${answer.heartbeat_seconds} s; dead after ${answer.dead_after_seconds} s without one.`),
      hosts.size ? [...hosts].map(([host, sups]) => el("section", { class: "host" },
        el("h2", {}, `host ${host}`), sups.map(supervisor)))
        : el("p", { id: "no-workers" }, "No workers have reported yet."));
  }
  load().catch((error) => banner(error.message));
  const timer = setInterval(() => load().catch((error) => banner(error.message)), 3000);
  leaving.push(() => clearInterval(timer));
}

// ---- routes, login -------------------------------------------------------------------------

function route() {
  for (const stop of leaving) stop();
  leaving = [];
  if (!session.role) return;
  const hash = location.hash || "#/overview";
  const task = hash.match(/^#\/tasks\/([0-9]{1,19})$/);
  const view = task ? "tasks" : hash.slice(2) || "overview";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  banner("");
  if (task) viewTask(task[1]);
  else if (view === "tasks") viewTasks();
  else if (view === "workers") viewWorkers();
  else viewOverview();
}

async function checkSession() {
  const me = await api("GET", "/api/session");
  session.role = me.role;
  session.authRequired = me.auth_required;
  const inside = Boolean(me.role);
  document.getElementById("login").hidden = inside;
  document.getElementById("nav").hidden = !inside;
  document.getElementById("main").hidden = !inside;
  document.getElementById("logout").hidden = !(inside && me.auth_required);
  document.getElementById("who").textContent = inside ? (me.role === "admin" ? "admin" : "read-only") : "";
  if (inside) route();
  else {
    for (const stop of leaving) stop();
    leaving = [];
    document.getElementById("token").focus();
  }
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  try {
    await api("POST", "/api/session", { token: input.value });
    input.value = "";
    error.textContent = "";
    await checkSession();
  } catch (failure) {
    error.textContent = failure.message;
  }
});
document.getElementById("logout").addEventListener("click", async () => {
  await api("DELETE", "/api/session").catch((error) => banner(error.message));
  await checkSession();
});
window.addEventListener("hashchange", route);
checkSession().catch((error) => banner(error.message));
