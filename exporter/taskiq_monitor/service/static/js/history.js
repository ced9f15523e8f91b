// History: every execution the store holds (GET /api/v1/executions; GET /api/v1/events where the executions API
// does not exist), filtered by task type, status, date range and task id; 50 rows a page with the API's cursor.
// The filters and the cursor live in the URL:
// #/history?task_name=…&status=…&since=…&until=…&task_id=…&cursor=…
import { ApiError, getJSON } from "./api.js";
import { $, el, fmtDuration, fmtTime, setText, taskLink, worker } from "./dom.js";

export const PAGE_SIZE = 50;
const FIELDS = ["task_name", "status", "since", "until", "task_id"];

function toInput(iso) {
  // RFC 3339 (URL) -> the datetime-local input's local "YYYY-MM-DDTHH:MM:SS"
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:` +
    `${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export class History {
  constructor(app) {
    this.app = app;
    this.cursors = []; // cursors of the pages before this one, for "Newer"
    this.params = new URLSearchParams();
    this.form = $("#history-form");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.cursors = [];
      this.navigate(this.fromForm());
    });
    $("#history-reset").addEventListener("click", () => {
      this.cursors = [];
      this.navigate(new URLSearchParams());
    });
    $("#history-older").addEventListener("click", () => {
      if (!this.next) return;
      this.cursors.push(this.params.get("cursor") || "");
      const params = new URLSearchParams(this.params);
      params.set("cursor", this.next);
      params.set("page", String(this.page() + 1));
      this.navigate(params);
    });
    $("#history-newer").addEventListener("click", () => {
      const params = new URLSearchParams(this.params);
      const previous = this.cursors.pop();
      if (previous) params.set("cursor", previous);
      else params.delete("cursor");
      if (this.page() > 2 && previous) params.set("page", String(this.page() - 1));
      else params.delete("page");
      this.navigate(params);
    });
  }

  page() {
    return Number(this.params.get("page") || "1");
  }

  fromForm() {
    const data = new FormData(this.form);
    const params = new URLSearchParams();
    for (const name of FIELDS) {
      let value = String(data.get(name) || "").trim();
      if (!value) continue;
      if (name === "since" || name === "until") value = new Date(value).toISOString();
      params.set(name, value);
    }
    return params;
  }

  navigate(params) {
    const query = params.toString();
    const hash = `#/history${query ? `?${query}` : ""}`;
    if (location.hash === hash) this.show(params); // same filters applied again: reload the page of results
    else location.hash = hash;
  }

  async show(params) {
    this.params = params;
    if (!params.get("cursor")) this.cursors = [];
    for (const name of FIELDS) {
      const input = this.form.elements.namedItem(name);
      const value = params.get(name) || "";
      if (name === "task_name" && value && ![...input.options].some((o) => o.value === value)) {
        input.append(el("option", {}, value));
      }
      input.value = name === "since" || name === "until" ? (value ? toInput(value) : "") : value;
    }
    setText($("#history-page"), `Page ${this.page()}`);
    const body = $("#history-rows");
    const empty = $("#history-empty");
    const executions = await this.app.hasExecutions();
    setText($("#history-source"), executions
      ? "Executions, newest first (one row per attempt)."
      : "Recorded events, newest first (this exporter has no executions history; one row per state change).");
    if (!executions && params.get("task_id")) {
      // The events API cannot search by id: the task page collects its attempts.
      location.hash = taskLink(params.get("task_id"), params.get("task_name"));
      return;
    }
    const query = { limit: PAGE_SIZE, cursor: params.get("cursor") };
    for (const name of FIELDS) if (params.get(name)) query[name] = params.get(name);
    let rows;
    let next;
    try {
      if (executions) {
        const page = await getJSON("api/v1/executions", query);
        rows = page.executions.map((x) => this.executionRow(x));
        next = page.next_cursor;
      } else {
        const page = await getJSON("api/v1/events", query);
        rows = page.events.map((x) => this.eventRow(x.event));
        next = page.next_cursor;
      }
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      body.replaceChildren();
      empty.hidden = false;
      setText(empty, err.status === 503 ? "The task state store (Redis) is unreachable; try again shortly."
        : err.status === 404 ? "This exporter has no task state (set TASKIQ_MONITOR_REDIS_URL)."
          : `Cannot load the history: ${err.message}`);
      this.next = null;
      this.pager();
      return;
    }
    if (this.params !== params) return; // a newer navigation won
    body.replaceChildren(...rows);
    empty.hidden = rows.length > 0;
    setText(empty, FIELDS.some((f) => params.get(f)) ? "No execution matches these filters."
      : "The store holds no execution yet.");
    this.next = rows.length ? next : null;
    this.pager();
  }

  pager() {
    $("#history-older").disabled = !this.next;
    $("#history-newer").disabled = !this.params.get("cursor");
  }

  row(r, id) {
    return el(
      "tr",
      { "data-testid": "history-row", "data-task-id": r.task_id, "data-task-name": r.task_name, "data-status": r.status,
        "data-event-id": id },
      el("td", { class: "mono" }, fmtTime(r.time)),
      el("td", {}, r.task_name),
      el("td", {}, el("span", { class: `pill ${r.status}` }, r.status)),
      el("td", { class: "num" }, r.attempt ?? ""),
      el("td", { class: "num" }, r.duration === null || r.duration === undefined ? "" : fmtDuration(r.duration)),
      el("td", { class: "mono" }, worker(r.worker)),
      el("td", { class: "mono" }, el("a", { href: taskLink(r.task_id, r.task_name) }, r.task_id)),
    );
  }

  executionRow(x) {
    return this.row({ ...x, time: x.finished_at ?? x.started_at ?? x.enqueued_at, duration: x.duration_seconds });
  }

  eventRow(e) {
    return this.row({ ...e, time: e.timestamp, duration: e.duration_seconds });
  }
}
