// Overview: the fleet strip and one health card per registered task type, trouble first.
import { ApiError, getJSON } from "./api.js";
import { $, el, fmtAge, fmtDuration, fmtRate, fmtWindow, notice, setText } from "./dom.js";
import { LEVELS, health } from "./health.js";
import { sparkline } from "./sparkline.js";

const POLL_MS = 2000;
const MIN_REFRESH_MS = 400; // under a stream of events: at most 2.5 refreshes/s, well within the 1 s goal
const SERIES_MS = 30000;

export class Overview {
  constructor(app) {
    this.app = app;
    this.cards = new Map();
    this.active = false;
    this.inFlight = false;
    this.again = false;
    this.lastRefresh = 0;
    this.series = null; // null: not loaded; false: the API does not exist
    this.seriesAt = -Infinity;
    this.timer = null;
    this.data = null;
  }

  show() {
    this.active = true;
    this.refresh();
  }

  hide() {
    this.active = false;
    clearTimeout(this.timer);
    clearTimeout(this.pokeTimer);
    this.pokeTimer = null;
  }

  /** Called for every live event: refresh soon (throttled), so a change shows within a second. */
  poke() {
    if (!this.active) return;
    const wait = Math.max(0, this.lastRefresh + MIN_REFRESH_MS - performance.now());
    if (this.pokeTimer) return;
    this.pokeTimer = setTimeout(() => {
      this.pokeTimer = null;
      this.refresh();
    }, wait);
  }

  async refresh() {
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    this.lastRefresh = performance.now();
    clearTimeout(this.timer);
    try {
      const [tasks] = await Promise.all([getJSON("api/v1/tasks"), this.loadSeries()]);
      this.data = tasks;
      // Hidden, or logged out (no config), while the request was out: nothing to draw, and nothing to draw it with.
      if (!this.active || !this.app.config) return;
      notice("state", null, null);
      this.render(tasks);
    } catch (err) {
      this.failed(err);
    } finally {
      this.inFlight = false;
      if (this.active) {
        if (this.again) {
          this.again = false;
          this.poke();
        }
        this.timer = setTimeout(() => this.refresh(), POLL_MS);
      }
    }
  }

  async loadSeries() {
    if (this.series === false || performance.now() - this.seriesAt < SERIES_MS) return;
    this.seriesAt = performance.now();
    try {
      this.series = await getJSON("api/v1/tasks/series", { minutes: 60 });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) this.series = false;
    }
  }

  failed(err) {
    if (!(err instanceof ApiError)) throw err;
    // 401: the login form is shown; hidden or logged out while the request was out: a notice would be stale.
    if (err.status === 401 || !this.active || !this.app.config) return;
    const empty = $("#cards-empty");
    if (err.status === 503) {
      notice("state", "error", "The task state store (Redis) is unreachable — taskiq_monitor_state_up is 0. " +
        "The figures shown are the last known ones; retrying every few seconds.");
    } else if (err.status === 404) {
      notice("state", "warn", "This exporter has no task state: set TASKIQ_MONITOR_REDIS_URL (shared with the " +
        "workers) to see task health, the live feed and the history. /metrics works without it.");
      if (!this.cards.size) {
        empty.hidden = false;
        setText(empty, "No task state configured.");
      }
    } else if (err.status === 0) {
      notice("state", "error", "The exporter cannot be reached; retrying.");
    } else {
      notice("state", "error", `Cannot load the task health: ${err.message}`);
    }
  }

  render(data) {
    const t = this.app.config.thresholds;
    const tasks = data.tasks.map((task) => ({ task, ...health(task, t) }));
    tasks.sort((a, b) => LEVELS.indexOf(a.level) - LEVELS.indexOf(b.level) ||
      (b.task.window.failed || 0) - (a.task.window.failed || 0) ||
      (b.task.pending - a.task.pending) || a.task.task_name.localeCompare(b.task.task_name));
    this.fleet(data);
    const empty = $("#cards-empty");
    empty.hidden = tasks.length > 0;
    if (!tasks.length) {
      setText(empty, "No task type is registered yet: start a worker (taskiq-monitor worker …) and its task types " +
        "appear here, with zero values until they run.");
    }
    const container = $("#cards");
    const seen = new Set();
    let previous = null;
    for (const item of tasks) {
      const name = item.task.task_name;
      seen.add(name);
      let card = this.cards.get(name);
      if (!card) {
        card = this.buildCard(name);
        this.cards.set(name, card);
      }
      this.fill(card, item, data);
      // Keep DOM order = sort order, moving only what changed place (focus stays where it is).
      const expected = previous ? previous.nextSibling : container.firstChild;
      if (expected !== card.root) container.insertBefore(card.root, expected);
      previous = card.root;
    }
    for (const [name, card] of this.cards) {
      if (!seen.has(name)) {
        card.root.remove();
        this.cards.delete(name);
      }
    }
    this.app.setTaskNames(data.tasks.map((x) => x.task_name));
    this.app.registryLoaded = true;
  }

  fleet(data) {
    let running = 0;
    let pending = 0;
    let failed = 0;
    let finished = 0;
    for (const task of data.tasks) {
      running += task.running;
      pending += task.pending;
      failed += task.window.failed || 0;
      finished += (task.window.success || 0) + (task.window.failed || 0);
    }
    const set = (name, value) => setText($(`[data-fleet="${name}"]`), value);
    set("workers", data.workers);
    set("running", running);
    set("pending", pending);
    set("failure_ratio", finished ? fmtRate(failed / finished) : "–");
    set("types", data.tasks.length);
    if (data.workers === 0) {
      notice("workers", "warn", "No worker is alive (no heartbeat in the shared state). Tasks stay pending until " +
        "a worker starts.");
    } else {
      notice("workers", null, null);
    }
  }

  buildCard(name) {
    const fields = {};
    const count = (field, label) => {
      fields[field] = el("dd", { "data-field": field }, "0");
      return el("div", {}, el("dt", {}, label), fields[field]);
    };
    const stat = (field, label) => {
      fields[field] = el("dd", { "data-field": field }, "–");
      fields[`${field}_label`] = el("dt", {}, label);
      return el("div", {}, fields[`${field}_label`], fields[field]);
    };
    const params = new URLSearchParams({ task_name: name });
    const badge = el("span", { class: "badge healthy", "data-field": "health" }, "healthy");
    const reasons = el("p", { class: "reasons", "data-field": "reasons" });
    const spark = el("div", { class: "spark-slot" });
    const root = el(
      "article",
      { class: "card", "data-testid": "task-card", "data-task-name": name, "aria-label": name },
      el("div", { class: "card-head" },
        el("h2", { class: "card-title" }, el("a", { href: `#/history?${params}`, title: "History of this task type" },
          name)),
        badge),
      el("dl", { class: "counts" },
        count("pending", "queued"), count("running", "active"), count("success", "success"), count("failed", "failed")),
      el("dl", { class: "stats" },
        stat("success_rate", "success rate"), stat("avg_duration", "avg duration"),
        stat("oldest_pending_age", "oldest pending"), stat("retried", "retries")),
      spark,
      reasons,
    );
    return { root, fields, badge, reasons, spark };
  }

  fill(card, item, data) {
    const { task, level, reasons } = item;
    const f = card.fields;
    const w = task.window || {};
    card.root.dataset.health = level;
    card.badge.className = `badge ${level}`;
    setText(card.badge, level);
    setText(f.pending, task.pending);
    setText(f.running, task.running);
    setText(f.success, task.success_total);
    setText(f.failed, task.failed_total);
    f.failed.classList.toggle("failed-nonzero", task.failed_total > 0);
    const win = fmtWindow(w.seconds || this.app.config.stats_window_seconds);
    setText(f.success_rate_label, `success ${win}`);
    setText(f.success_rate, fmtRate(w.success_rate));
    setText(f.avg_duration, fmtDuration(w.avg_duration_seconds ?? task.avg_duration_seconds));
    setText(f.oldest_pending_age, task.pending ? fmtAge(task.oldest_pending_age_seconds) : "–");
    setText(f.retried, task.retried_total);
    setText(card.reasons, reasons.join(" · "));
    card.reasons.hidden = reasons.length === 0;
    const series = this.series && this.series.series ? this.series.series[task.task_name] : null;
    const key = series ? JSON.stringify(series) : "";
    if (card.sparkKey !== key || card.spark.childElementCount === 0) {
      card.sparkKey = key;
      card.spark.replaceChildren(series ? sparkline(series, task.task_name)
        : el("span", { class: "spark-none" }, this.series === false ? "" : "no activity in the last hour"));
      card.spark.hidden = this.series === false;
    }
  }
}
