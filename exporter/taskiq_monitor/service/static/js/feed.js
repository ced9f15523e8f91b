// Live feed: events as they occur, filtered in the page, newest first, at most MAX_ROWS rows in the DOM.
import { $, el, fmtDuration, fmtTime, setText, taskLink, worker } from "./dom.js";

export const MAX_ROWS = 500;
// At most this often the rows are laid out again: a 500-row table costs a layout per insertion, and at 1,000
// events/s one insertion per animation frame kept the main thread busy. Well within the 1 s freshness goal.
const MIN_FLUSH_MS = 200;
const MAX_BUFFER = 2000; // kept for re-filtering and resuming after a pause; bounded like the rows

export class Feed {
  constructor(app) {
    this.app = app;
    this.items = []; // {id, event} or {gap: text}, oldest first
    this.queue = []; // items waiting for the next frame
    this.frame = 0;
    this.flushTimer = 0;
    this.lastFlush = -Infinity;
    this.paused = false;
    // While paused, the table shows these items (the buffer as it was at the click), whatever the filters or views
    // do meanwhile; `received` counts every event, so the note's "N new events" holds even across another view.
    this.frozen = null;
    this.received = 0;
    this.receivedAtPause = 0;
    this.visible = false; // while another view is shown, events are only kept (no DOM work)
    this.filters = { task_name: "", status: "" };
    this.body = $("#feed-rows");
    $("#feed-task").addEventListener("change", (e) => this.setFilter("task_name", e.target.value));
    $("#feed-status").addEventListener("change", (e) => this.setFilter("status", e.target.value));
    $("#feed-pause").addEventListener("click", () => this.togglePause());
  }

  show() {
    this.visible = true;
    this.renderAll();
    if (this.paused) this.pausedNote();
  }

  hide() {
    this.visible = false;
  }

  setFilter(name, value) {
    this.filters[name] = value;
    this.renderAll();
  }

  togglePause() {
    this.paused = !this.paused;
    const button = $("#feed-pause");
    button.setAttribute("aria-pressed", String(this.paused));
    setText(button, this.paused ? "Resume" : "Pause");
    $("#feed-paused-note").hidden = !this.paused;
    if (this.paused) {
      // What arrived before the click is drawn now (a flush may be waiting for its frame); then nothing moves.
      this.cancelFlush();
      this.flush();
      this.frozen = this.items.slice();
      this.receivedAtPause = this.received;
      this.pausedNote();
    } else {
      this.frozen = null;
      this.renderAll();
    }
  }

  pausedNote() {
    const missed = this.received - this.receivedAtPause;
    setText($("#feed-paused-note"), missed ? `Paused — ${missed} new event${missed === 1 ? "" : "s"} since.`
      : "Paused — new events are kept and shown on resume.");
  }

  matches(item) {
    if (item.gap) return true;
    const { task_name: name, status } = this.filters;
    return (!name || item.event.task_name === name) && (!status || item.event.status === status);
  }

  push(item) {
    this.items.push(item);
    // Trimmed in chunks: one splice per 500 events rather than a shift of 2,000 entries per event.
    if (this.items.length > MAX_BUFFER + MAX_ROWS) this.items.splice(0, this.items.length - MAX_BUFFER);
    if (!this.visible) return;
    if (this.paused) {
      this.pausedNote();
      return;
    }
    this.queue.push(item);
    if (this.queue.length > MAX_ROWS) this.queue.splice(0, this.queue.length - MAX_ROWS);
    this.schedule();
  }

  schedule() {
    if (this.frame || this.flushTimer) return;
    const wait = this.lastFlush + MIN_FLUSH_MS - performance.now();
    if (wait <= 0) {
      this.frame = requestAnimationFrame(() => this.flush());
    } else {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = 0;
        this.frame = requestAnimationFrame(() => this.flush());
      }, wait);
    }
  }

  addEvent(id, event) {
    this.received += 1; // events only: a gap marker is no new event
    this.push({ id, event });
  }

  addGap(text) {
    this.push({ gap: text, at: Date.now() / 1000 });
  }

  flush() {
    this.frame = 0;
    this.lastFlush = performance.now();
    const batch = this.queue.filter((item) => this.matches(item));
    this.queue = [];
    if (!batch.length) return;
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i -= 1) fragment.append(this.row(batch[i]));
    this.body.prepend(fragment);
    while (this.body.childElementCount > MAX_ROWS) this.body.lastElementChild.remove();
    $("#feed-empty").hidden = true;
  }

  cancelFlush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    clearTimeout(this.flushTimer);
    this.frame = 0;
    this.flushTimer = 0;
  }

  renderAll() {
    this.cancelFlush();
    this.queue = [];
    const items = this.frozen || this.items;
    const rows = [];
    for (let i = items.length - 1; i >= 0 && rows.length < MAX_ROWS; i -= 1) {
      if (this.matches(items[i])) rows.push(this.row(items[i]));
    }
    this.body.replaceChildren(...rows);
    const empty = $("#feed-empty");
    empty.hidden = rows.length > 0;
    setText(empty, items.length ? "No event matches the filters yet." : "Waiting for events…");
  }

  row(item) {
    if (item.gap) {
      return el("tr", { class: "gap", "data-testid": "feed-gap" },
        el("td", {}, fmtTime(item.at)), el("td", { colspan: 7 }, `Gap: ${item.gap}`));
    }
    const e = item.event;
    const error = e.error_type ? `${e.error_type}: ${e.error_message || ""}` : "";
    return el(
      "tr",
      { "data-testid": "feed-row", "data-event-id": item.id, "data-task-name": e.task_name, "data-status": e.status,
        "data-task-id": e.task_id },
      el("td", { class: "mono" }, fmtTime(e.timestamp, true)),
      el("td", {}, el("span", { class: `pill ${e.status}` }, e.status)),
      el("td", {}, e.task_name),
      el("td", { class: "mono" }, el("a", { href: taskLink(e.task_id, e.task_name) }, e.task_id)),
      el("td", { class: "num" }, e.attempt ?? ""),
      el("td", { class: "num" }, e.duration_seconds === null || e.duration_seconds === undefined ? ""
        : fmtDuration(e.duration_seconds)),
      el("td", { class: "mono" }, worker(e.worker)),
      el("td", { class: "msg", title: error || null }, error),
    );
  }
}
