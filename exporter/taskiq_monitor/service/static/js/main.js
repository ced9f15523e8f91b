// Entry point: log-in, the router (#/, #/feed, #/history?…, #/task/<id>) and the shared live connection.
import { ApiError, getJSON, sendJSON } from "./api.js";
import { Detail } from "./detail.js";
import { $, el, notice, setText } from "./dom.js";
import { Feed } from "./feed.js";
import { History } from "./history.js";
import { CLOSE_SLOW_CONSUMER, CLOSE_UNAVAILABLE, LiveConnection } from "./live.js";
import { Overview } from "./overview.js";

const VIEWS = ["login", "overview", "feed", "history", "detail"];

/** A task id from the address; a "%" that starts no escape (an address typed or pasted by hand) is the id's own:
 * decodeURIComponent would throw, and the page would keep showing the previous task under the new address. */
function decodeId(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

class App {
  constructor() {
    this.config = null;
    this.live = new LiveConnection();
    this.overview = new Overview(this);
    this.feed = new Feed(this);
    this.history = new History(this);
    this.detail = new Detail(this);
    this.taskNames = [];
    this.registryLoaded = false; // taskNames holds every registered type (not only those seen in the live feed)
    this.executions = null;
    this.view = null;
    this.listHash = null; // the address of the last list view, for the task page's "← Back"
    this.configFailures = 0; // loading the settings failed this many times in a row (retried with a backoff)
    this.configTimer = 0;
    // Back online: retry now rather than when the backoff's timer fires (up to 10 s later).
    window.addEventListener("online", () => {
      if (this.configTimer) this.start();
      else this.live.reconnectNow();
    });
    window.addEventListener("hashchange", () => this.route());
    // The skip link moves focus only: following its "#main" would replace the view's route (and its filters).
    $("a.skip").addEventListener("click", (e) => {
      e.preventDefault();
      $("#main").focus();
    });
    document.addEventListener("auth-required", () => this.showLogin());
    $("#login-form").addEventListener("submit", (e) => this.login(e));
    $("#logout").addEventListener("click", () => this.logout());
    // The task type selects are capped in width: the full name of the chosen one is their title.
    for (const id of ["#feed-task", "#history-task"]) {
      $(id).addEventListener("change", (e) => { e.target.title = e.target.value; });
    }
    this.wireLive();
  }

  wireLive() {
    const status = $('[data-testid="live-status"]');
    this.live.addEventListener("state", (e) => {
      status.dataset.state = e.detail;
      setText(status, e.detail);
      if (e.detail === "live" || !this.config) notice("live", null, null); // logged out: nothing to retry
      else if (e.detail === "offline") {
        notice("live", "error", "The live feed is offline: the exporter cannot be reached. Retrying; events are " +
          "resumed from the last one received, without loss.");
      }
    });
    this.live.addEventListener("event", (e) => {
      this.feed.addEvent(e.detail.id, e.detail.event);
      this.noteTaskName(e.detail.event && e.detail.event.task_name);
      this.overview.poke();
      this.detail.poke(e.detail.event);
    });
    this.live.addEventListener("gap", (e) => this.feed.addGap(e.detail));
    this.live.addEventListener("closed", (e) => {
      const { code } = e.detail;
      if (code === CLOSE_SLOW_CONSUMER) {
        notice("live", "warn", "The live feed fell behind (the server closed it with 1013, slow consumer); " +
          "resuming from the last event received.");
      } else if (code === CLOSE_UNAVAILABLE) {
        notice("live", "error", "The live feed stopped: the task state store (Redis) is unavailable. Retrying.");
      } else if (code !== 4401 && this.live.state !== "offline") {
        notice("live", "warn", "The live feed was disconnected; reconnecting…");
      }
    });
    this.live.addEventListener("server-error", (e) => {
      if (e.detail.code !== "slow_consumer" && e.detail.code !== "future_id") {
        notice("live", "error", `Live feed: ${e.detail.message}`);
      }
    });
  }

  async start() {
    clearTimeout(this.configTimer);
    this.configTimer = 0;
    try {
      this.config = await getJSON("api/v1/ui/config");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // the login form is shown
      $("#loading").hidden = true;
      const status = err instanceof ApiError ? err.status : 0;
      const why = !status ? "the exporter cannot be reached"
        : `the exporter answered ${err.message === `HTTP ${status}` ? err.message : `HTTP ${status}: ${err.message}`}`;
      if (status > 0 && status < 500) {
        notice("config", "error", `Cannot load the dashboard's settings: ${why}. Reload the page to retry.`);
        return;
      }
      // Unreachable, or a server error (a proxy's 502 while the exporter restarts): it passes by itself.
      this.configFailures += 1;
      const delay = Math.min(10000, 250 * 2 ** Math.min(this.configFailures, 6)) * (0.8 + Math.random() * 0.4);
      notice("config", "error", `Cannot load the dashboard's settings: ${why}. Retrying in ` +
        `${Math.max(1, Math.round(delay / 1000))} s.`);
      this.configTimer = setTimeout(() => this.start(), delay);
      return;
    }
    this.configFailures = 0;
    if (this.config.grafana_url && !/^https?:\/\//i.test(this.config.grafana_url)) this.config.grafana_url = null;
    notice("config", null, null);
    $("#logout").hidden = !this.config.auth_required;
    await this.seedFeed();
    this.live.start();
    this.route();
  }

  /** The feed starts with the newest recorded events; the WebSocket then resumes right after the newest one. */
  async seedFeed() {
    if (this.live.lastId !== null) return;
    try {
      const page = await getJSON("api/v1/events", { limit: 50 });
      for (const item of [...page.events].reverse()) this.live.accept(item.id, item.event);
    } catch {
      // no store, or Redis down: the views say so; the feed starts live
    }
  }

  async hasExecutions() {
    if (this.executions === null) {
      try {
        await getJSON("api/v1/executions", { limit: 1 });
        this.executions = true;
      } catch (err) {
        if (err instanceof ApiError && (err.status === 404 || err.status === 405)) this.executions = false;
        else return false; // unknown yet (Redis down…): ask again next time
      }
    }
    return this.executions;
  }

  setTaskNames(names) {
    const sorted = [...names].sort();
    if (sorted.join("\n") === this.taskNames.join("\n")) return;
    this.taskNames = sorted;
    for (const id of ["#feed-task", "#history-task"]) {
      const select = $(id);
      const value = select.value;
      select.replaceChildren(el("option", { value: "" }, "All"), ...sorted.map((n) => el("option", {}, n)));
      if (value && !sorted.includes(value)) select.append(el("option", {}, value));
      select.value = value;
      select.title = value;
    }
  }

  /** A task type seen in the live feed joins the filters at once: the list is otherwise refreshed by the overview
   * only, and a page opened on the feed (or whose first /api/v1/tasks failed) kept a stale one. */
  noteTaskName(name) {
    if (typeof name !== "string" || !name || this.taskNames.includes(name)) return;
    this.setTaskNames([...this.taskNames, name]);
  }

  async loadTaskNames() {
    if (this.registryLoaded) return; // the overview keeps it current from then on
    try {
      const data = await getJSON("api/v1/tasks");
      this.setTaskNames(data.tasks.map((t) => t.task_name));
      this.registryLoaded = true;
    } catch {
      // the views say what is wrong
    }
  }

  showView(name) {
    $("#loading").hidden = true;
    for (const view of VIEWS) $(`#view-${view}`).hidden = view !== name;
    for (const link of document.querySelectorAll("[data-nav]")) {
      const current = link.dataset.nav === name || (name === "detail" && link.dataset.nav === "history");
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (this.view !== name) {
      if (this.view === "overview") this.overview.hide();
      if (this.view === "feed") this.feed.hide();
      if (this.view === "detail") this.detail.hide();
      this.view = name;
      if (name === "feed") this.feed.show();
    }
  }

  route() {
    if (!this.config) return;
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query = ""] = hash.split("?");
    const params = new URLSearchParams(query);
    if (!path.startsWith("/task/")) this.listHash = `#${hash}`;
    if (path === "/feed") {
      this.showView("feed");
      document.title = "Live feed · taskiq-monitor";
      this.loadTaskNames();
    } else if (path === "/history") {
      this.showView("history");
      document.title = "History · taskiq-monitor";
      this.loadTaskNames();
      this.history.show(params);
    } else if (path.startsWith("/task/")) {
      this.showView("detail");
      document.title = "Task · taskiq-monitor";
      this.backLink(params);
      this.detail.show(decodeId(path.slice("/task/".length)), params);
    } else {
      this.showView("overview");
      document.title = "Overview · taskiq-monitor";
      this.overview.show();
    }
  }

  /** "← Back" returns to the view (and its filters) the task page was opened from; opened directly, to the
   * history of its task type. */
  backLink(params) {
    const back = $("#detail-back");
    let target = this.listHash;
    if (!target) {
      const name = params.get("task_name");
      target = name ? `#/history?${new URLSearchParams({ task_name: name })}` : "#/history";
    }
    back.href = target;
    const to = target.startsWith("#/history") ? "history" : target.startsWith("#/feed") ? "live feed" : "overview";
    setText(back, `← Back to ${to}`);
  }

  showLogin() {
    const ended = this.config !== null; // logged in until now: the session ended (expired, or another token)
    this.live.stop();
    this.overview.hide();
    this.detail.hide();
    this.config = null;
    // Whatever was wrong while logged in (unreachable exporter, offline feed) is stale on the login form.
    for (const node of [...$("#notices").children]) if (node.dataset.notice !== "session") node.remove();
    if (ended && !this.loggingOut) {
      notice("session", "info", "Your session ended (the exporter may have restarted with another token): " +
        "log in again.");
    }
    this.showView("login");
    document.title = "Log in · taskiq-monitor";
    $("#logout").hidden = true;
    $("#login-token").focus();
  }

  async login(event) {
    event.preventDefault();
    const input = $("#login-token");
    const error = $("#login-error");
    try {
      await sendJSON("POST", "api/v1/session", { token: input.value });
    } catch (err) {
      error.hidden = false;
      setText(error, err instanceof ApiError && err.status === 401 ? "Wrong token." : `Cannot log in: ${err.message}`);
      input.select();
      return;
    }
    input.value = "";
    error.hidden = true;
    notice("session", null, null);
    await this.start();
    // The form and its focused field are hidden now: the focus would fall back to the top of the document.
    if (this.config) $("#main").focus();
  }

  async logout() {
    this.loggingOut = true;
    try {
      await sendJSON("DELETE", "api/v1/session");
    } finally {
      this.showLogin();
      this.loggingOut = false;
    }
  }
}

const app = new App();
window.taskiqMonitor = app; // for benchmarks and debugging; not a contract
app.start();
