// Error detail of one task id: error type and message, traceback, redacted parameters, timings, every attempt,
// and links to Grafana (Loki query, trace) when TASKIQ_MONITOR_GRAFANA_URL is set. Until the task has finished
// (its last attempt succeeded or failed) the page is loaded again every POLL_MS, and at once when the live feed
// carries an event of this task id; a retry's new attempt then appears by itself.
import { ApiError, getJSON } from "./api.js";
import { $, el, fmtDuration, fmtTime, setText, statusPill, toUnix, worker } from "./dom.js";

const LOST_NOTE = " — lost: its worker stopped (killed or crashed), its message expired, or its final event was " +
  "dropped; the outcome is unknown";

const SCAN_PAGES = 20; // events fallback: at most 1,000 events examined for one task id
const ORDER = { pending: 0, running: 1, retried: 2, failed: 2, success: 2 };
const POLL_MS = 2000; // as the overview
const POKE_MS = 200; // a burst of events of this task (running, then its outcome) costs one load
const FINISHED = new Set(["success", "failed"]); // "retried": another attempt follows

/** Attempts from raw events (the events API fallback): one per attempt, later state changes win. */
export function attemptsFromEvents(events) {
  const byAttempt = new Map();
  for (const e of [...events].reverse()) { // oldest first
    const current = byAttempt.get(e.attempt) || {};
    const merged = { ...current };
    for (const [k, v] of Object.entries(e)) if (v !== null && v !== undefined) merged[k] = v;
    if ((ORDER[e.status] ?? 0) < (ORDER[current.status] ?? -1)) merged.status = current.status;
    byAttempt.set(e.attempt, merged);
  }
  return [...byAttempt.values()].sort((a, b) => a.attempt - b.attempt);
}

function explore(base, datasource, expr) {
  const left = { datasource, queries: [{ refId: "A", datasource: { uid: datasource }, expr, query: expr }],
    range: { from: "now-7d", to: "now" } };
  return `${base}/explore?orgId=1&left=${encodeURIComponent(JSON.stringify(left))}`;
}

// events.bounded_task_id: an id over RECORDED_MAX characters is recorded as its head and "~sha256:" + 32 hex digits.
const RECORDED_MAX = 512;
const DIGEST_TAIL = "~sha256:".length + 32;

/** Whether an event's (recorded) task id is the one asked for, in full or bounded. Without the digest (a hash
 * needs a secure context here), a bounded id is matched by its head: two ids that long and alike are not told apart
 * on this path, which only an exporter without an execution history takes. */
export function sameTask(recorded, wanted) {
  if (recorded === wanted) return true;
  return wanted.length > RECORDED_MAX && recorded.length === RECORDED_MAX
    && recorded.slice(RECORDED_MAX - DIGEST_TAIL).startsWith("~sha256:")
    && wanted.startsWith(recorded.slice(0, RECORDED_MAX - DIGEST_TAIL));
}

export class Detail {
  constructor(app) {
    this.app = app;
    this.current = null; // the task id shown, null while another view is
    // The id the store holds for it: the same, or for an id over 512 characters its bounded form (head and digest,
    // events.bounded_task_id), which the API answers with. Live events and Loki carry this one.
    this.recorded = null;
    this.params = new URLSearchParams();
    this.timer = null;
    this.inFlight = false;
    this.again = false;
    this.shown = null; // the attempts drawn, as JSON: an unchanged answer leaves the page (and its scroll) alone
    this.finished = false;
  }

  show(taskId, params) {
    this.hide();
    this.current = taskId;
    this.recorded = taskId;
    this.params = params;
    this.shown = null;
    this.finished = false;
    setText($("#detail-title"), taskId);
    setText($("#detail-status"), "Loading…");
    $("#detail-error").hidden = true;
    $("#detail-links").replaceChildren();
    $("#detail-timings").replaceChildren();
    $("#detail-attempts").replaceChildren();
    for (const id of ["#detail-error-attempt", "#detail-timings-attempt", "#detail-params-attempt"]) setText($(id), "");
    setText($('#detail [data-field="params"]'), "");
    delete $("#detail").dataset.status;
    this.refresh();
  }

  hide() {
    this.current = null;
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** A live event: one of this task's means the page is out of date (a new attempt, or its outcome). */
  poke(event) {
    if (this.current === null || !event || event.task_id !== this.recorded) return;
    this.schedule(POKE_MS);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), ms);
  }

  async refresh() {
    const taskId = this.current;
    if (taskId === null) return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    clearTimeout(this.timer);
    let attempts = null;
    let failure = null;
    try {
      attempts = await this.load(taskId, this.params.get("task_name"));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      failure = err;
    } finally {
      this.inFlight = false;
    }
    if (this.current !== taskId) { // left, or another task opened, while the request was out
      // The task opened meanwhile had its first load deferred behind this one (`again`): load it now.
      const deferred = this.again;
      this.again = false;
      if (deferred && this.current !== null) this.schedule(0);
      return;
    }
    if (failure) {
      if (failure.status === 401) return; // the login form is shown
      const text = failure.status === 503 ? "The task state store (Redis) is unreachable."
        : `Cannot load this task: ${failure.message}`;
      setText($("#detail-status"), this.shown === null ? text : `${text} Showing the last answer; retrying.`);
      this.shown = null; // the next answer is drawn again, status line included
    } else if (!attempts.length) {
      setText($("#detail-status"), "No execution with this task id is in the store (it may have been trimmed).");
    } else {
      this.recorded = attempts[0].task_id || taskId;
      const key = JSON.stringify(attempts);
      if (key !== this.shown) {
        this.shown = key;
        this.render($("#detail"), taskId, attempts);
      }
      const lastAttempt = attempts[attempts.length - 1];
      this.finished = FINISHED.has(lastAttempt.status) || Boolean(lastAttempt.lost); // a lost one will not change
    }
    if (this.again) {
      this.again = false;
      this.schedule(0);
    } else if (failure || (attempts.length && !this.finished)) {
      this.schedule(POLL_MS);
    }
  }

  async load(taskId, taskName) {
    if (await this.app.hasExecutions()) {
      try {
        const body = await getJSON(`api/v1/executions/${encodeURIComponent(taskId)}`);
        return body.attempts || [];
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) return [];
        throw err;
      }
    }
    const found = [];
    let cursor = null;
    for (let page = 0; page < SCAN_PAGES; page += 1) {
      const body = await getJSON("api/v1/events", { task_name: taskName, limit: 50, cursor });
      for (const item of body.events) if (sameTask(item.event.task_id, taskId)) found.push(item.event);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    return attemptsFromEvents(found);
  }

  render(root, taskId, attempts) {
    const last = attempts[attempts.length - 1];
    const failed = [...attempts].reverse().find((a) => a.error_type || a.traceback) || null;
    // A lost attempt will not change any more: nothing to wait for.
    const finished = FINISHED.has(last.status) || Boolean(last.lost);
    // Each section says which attempt it describes: the error may be an earlier attempt's than the last.
    const which = (a) => (attempts.length === 1 ? "" : a === last
      ? `(attempt ${a.attempt}, the last of ${attempts.length})` : `(attempt ${a.attempt} of ${attempts.length})`);
    setText($("#detail-title"), `${last.task_name} · ${taskId}`);
    setText($("#detail-status"), `${attempts.length} attempt${attempts.length === 1 ? "" : "s"}; last: ` +
      `${last.status}${last.lost ? LOST_NOTE : finished ? "" : " — updated live until it finishes"}`);
    root.dataset.taskId = taskId;
    root.dataset.status = last.status;
    const box = $("#detail-error");
    box.hidden = !failed;
    if (failed) {
      setText($("#detail-error-attempt"), which(failed));
      setText($('#detail [data-field="error_type"]'), failed.error_type || "Error");
      setText($('#detail [data-field="error_message"]'), failed.error_message || "");
      setText($('#detail [data-field="traceback"]'), failed.traceback || "(no traceback recorded)");
    }
    // Timings and parameters: the last attempt's (parameters: the latest attempt that recorded them).
    const shown = last;
    const withParams = [...attempts].reverse().find((a) => a.args != null || a.kwargs != null) || last;
    const params = { args: withParams.args ?? [], kwargs: withParams.kwargs ?? {} };
    if (withParams.labels && Object.keys(withParams.labels).length) params.labels = withParams.labels;
    setText($('#detail [data-field="params"]'), JSON.stringify(params, null, 2));
    setText($("#detail-params-attempt"), which(withParams));
    setText($("#detail-timings-attempt"), which(shown));
    const timings = $("#detail-timings");
    const kv = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
    timings.replaceChildren(
      ...kv("Enqueued", fmtTime(toUnix(shown.enqueued_at), true)),
      ...kv("Started", fmtTime(toUnix(shown.started_at), true)),
      ...kv("Finished", fmtTime(toUnix(shown.finished_at), true)),
      ...kv("Queue wait", fmtDuration(shown.queue_wait_seconds)),
      ...kv("Duration", fmtDuration(shown.duration_seconds)),
      ...kv("Worker", worker(shown.worker)),
      ...kv("Trace id", shown.trace_id || "–"),
    );
    $("#detail-attempts").replaceChildren(...attempts.map((a) => el(
      "tr",
      { "data-testid": "attempt-row", "data-attempt": a.attempt, "data-status": a.status,
        "data-lost": a.lost ? "true" : "false" },
      el("td", { class: "num" }, a.attempt),
      el("td", {}, statusPill(a.status, a.lost)),
      el("td", { class: "mono" }, fmtTime(toUnix(a.started_at), true)),
      el("td", { class: "num" }, fmtDuration(a.duration_seconds)),
      el("td", { class: "mono" }, worker(a.worker)),
      el("td", { class: "msg" },
        a.error_type ? el("div", { class: "clip" }, `${a.error_type}: ${a.error_message || ""}`) : ""),
    )));
    // A long message scrolls in its cell (app.css): a region that scrolls is reachable by keyboard (WCAG 2.1.1).
    for (const clip of document.querySelectorAll("#detail-attempts .clip")) {
      if (clip.scrollHeight > clip.clientHeight) clip.tabIndex = 0;
    }
    const grafana = this.app.config.grafana_url;
    const links = $("#detail-links");
    if (grafana) {
      const selector = `{service_name=${JSON.stringify(this.app.config.service_name)}}`;
      const { loki_datasource_uid: lokiUid, tempo_datasource_uid: tempoUid } = this.app.config;
      const loki = explore(grafana, lokiUid, `${selector} | task_id=${JSON.stringify(last.task_id || taskId)}`);
      const items = [el("a", { href: loki, target: "_blank", rel: "noopener noreferrer", "data-link": "loki" },
        "Logs in Grafana (Loki)")];
      const traceId = shown.trace_id || attempts.map((a) => a.trace_id).find(Boolean);
      if (traceId) {
        items.push(el("a", { href: explore(grafana, tempoUid, traceId), target: "_blank", rel: "noopener noreferrer",
          "data-link": "trace" }, "Trace in Grafana (Tempo)"));
      }
      links.replaceChildren(...items);
    }
  }
}
