// History: every execution the store holds (GET /api/v1/executions; GET /api/v1/events where the executions API
// does not exist), filtered by task type, status, date range and task id; 50 rows a page with the API's cursor.
// The filters, the cursor and the trail of the pages before it live in the URL, so Back, Forward, a reload and a
// shared link all show the same page, and "Newer" goes to the page before it:
// #/history?task_name=…&status=…&since=…&until=…&task_id=…&cursor=…&trail=…&page=…
// trail: the cursors of pages 2 … N-1, oldest first, comma-separated (the API's cursors are base64url: no comma);
// page: N, for reading only (it follows from the trail).
import { ApiError, getJSON } from "./api.js";
import { $, el, fmtDuration, fmtTime, setText, statusPill, taskLink, worker } from "./dom.js";

export const PAGE_SIZE = 50;
const FIELDS = ["task_name", "status", "since", "until", "task_id"];

/** The cursors of the pages before this one (page 1's is ""), from the address. */
export function trailOf(params) {
  if (!params.get("cursor")) return [];
  const trail = (params.get("trail") || "").split(",").filter(Boolean);
  return ["", ...trail];
}

/** A reversed range, said in local time as the inputs show it; null when the range is fine. */
export function rangeError(since, until) {
  if (!since || !until) return null;
  const from = new Date(since);
  const to = new Date(until);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) || from <= to) return null;
  return `"From" (${fmtLocal(from)}) is after "To" (${fmtLocal(to)}): nothing can match. Swap them or clear one.`;
}

function fmtLocal(date) {
  return toInput(date.toISOString()).replace("T", " ");
}

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
    this.params = new URLSearchParams();
    this.form = $("#history-form");
    this.error = $("#history-form-error");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      const params = this.fromForm();
      const error = rangeError(params.get("since"), params.get("until"));
      this.formError(error);
      if (error) {
        this.form.elements.namedItem("since").focus();
        return;
      }
      this.navigate(params);
    });
    $("#history-reset").addEventListener("click", () => {
      this.formError(null);
      this.navigate(new URLSearchParams());
    });
    $("#history-older").addEventListener("click", () => {
      if (!this.next) return;
      this.navigate(this.pageParams([...trailOf(this.params), this.params.get("cursor") || ""], this.next));
    });
    $("#history-newer").addEventListener("click", () => {
      const trail = trailOf(this.params);
      if (!trail.length) return;
      this.navigate(this.pageParams(trail.slice(0, -1), trail[trail.length - 1]));
    });
  }

  /** This view's filters at the page of `cursor`, after the pages of `trail` ("" or absent: page 1). */
  pageParams(trail, cursor) {
    const params = new URLSearchParams();
    for (const name of FIELDS) if (this.params.get(name)) params.set(name, this.params.get(name));
    if (!cursor) return params;
    params.set("cursor", cursor);
    const earlier = trail.filter(Boolean);
    if (earlier.length) params.set("trail", earlier.join(","));
    params.set("page", String(earlier.length + 2));
    return params;
  }

  formError(text) {
    this.error.hidden = !text;
    setText(this.error, text);
  }

  page() {
    return this.params.get("cursor") ? trailOf(this.params).length + 1 : 1;
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
    // Until this page's rows are in, "Older" has no cursor to go on: the previous page's would lead to this page
    // again, numbered one more (a second press while a slow page loads).
    this.next = null;
    for (const name of FIELDS) {
      const input = this.form.elements.namedItem(name);
      const value = params.get(name) || "";
      if (name === "task_name" && value && ![...input.options].some((o) => o.value === value)) {
        input.append(el("option", {}, value));
      }
      input.value = name === "since" || name === "until" ? (value ? toInput(value) : "") : value;
      if (name === "task_name") input.title = value;
    }
    setText($("#history-page"), `Page ${this.page()}`);
    const body = $("#history-rows");
    const empty = $("#history-empty");
    const reversed = rangeError(params.get("since"), params.get("until"));
    this.formError(reversed);
    if (reversed) { // typed or shared that way: the server would only refuse it
      body.replaceChildren();
      empty.hidden = false;
      setText(empty, "No execution can match a range that ends before it starts.");
      this.next = null;
      this.pager();
      return;
    }
    const executions = await this.app.hasExecutions();
    if (this.params !== params) return;
    // The Time column shows the time the rows are ordered and the From/To range selects by.
    const timeHead = $("#history-time-head");
    setText(timeHead, executions ? "Enqueued" : "Time");
    timeHead.title = executions ? "When the execution was first recorded: enqueued, or started when it was never " +
      "seen pending. Rows are ordered, and From/To select, by this time." : "When the state change was recorded.";
    setText($("#history-source"), executions
      ? "Executions, newest first by the time they were enqueued (one row per attempt); From/To select by that time."
      : "Recorded events, newest first (this exporter has no executions history; one row per state change).");
    if (!executions && params.get("task_id")) {
      // The events API cannot search by id: the task page collects its attempts. It replaces this address, and
      // its "← Back" leads to the task type's history, not here again.
      this.app.listHash = null;
      location.replace(taskLink(params.get("task_id"), params.get("task_name")));
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
      if (this.params !== params) return;
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
    const older = $("#history-older");
    const newer = $("#history-newer");
    const focused = document.activeElement;
    older.disabled = !this.next;
    newer.disabled = !this.params.get("cursor");
    // A button disabled while it has the focus drops it to <body>: paging by keyboard to the last (or first) page,
    // the next Tab would start again from the top. The focus goes to the other way instead.
    if ((focused === older || focused === newer) && focused.disabled) {
      const other = focused === older ? newer : older;
      (other.disabled ? $("#main") : other).focus();
    }
  }

  row(r, id) {
    return el(
      "tr",
      { "data-testid": "history-row", "data-task-id": r.task_id, "data-task-name": r.task_name, "data-status": r.status,
        "data-event-id": id, "data-lost": r.lost ? "true" : "false" },
      el("td", { class: "mono" }, fmtTime(r.time)),
      el("td", {}, r.task_name),
      el("td", {}, statusPill(r.status, r.lost)),
      el("td", { class: "num" }, r.attempt ?? ""),
      el("td", { class: "num" }, r.duration === null || r.duration === undefined ? "" : fmtDuration(r.duration)),
      el("td", { class: "mono" }, worker(r.worker)),
      el("td", { class: "mono" }, el("a", { href: taskLink(r.task_id, r.task_name) }, r.task_id)),
    );
  }

  executionRow(x) {
    // The store's order: first recorded (enqueued, or started when the pending event was never seen).
    return this.row({ ...x, time: x.enqueued_at ?? x.started_at ?? x.finished_at, duration: x.duration_seconds });
  }

  eventRow(e) {
    return this.row({ ...e, time: e.timestamp, duration: e.duration_seconds });
  }
}
