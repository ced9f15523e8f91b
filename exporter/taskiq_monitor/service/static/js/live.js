// The one WebSocket of the page (/ws/events), shared by the feed and the overview.
// Resumes from the last event id after any disconnect (exactly once: ids only grow, older ones are dropped), with
// exponential backoff; the session cookie authenticates it. Frames: v1 {"type":"event",id,event} and
// v2 {"type":"events","v":2,"events":[{id,event}...]}, plus hello/live/gap/ping/pong/error.

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_SLOW_CONSUMER = 1013;
export const CLOSE_UNAVAILABLE = 1011;
export const CLOSE_SILENT = 4000; // ours: the connection answered nothing (see check)
// The exporter pings an idle feed every 15 s (TASKIQ_MONITOR_LIVE_PING_SECONDS): after this long without a frame the
// page pings it, and a connection that does not answer within PROBE_MS is dead (its close could take forever).
const SILENCE_MS = 20000;
const PROBE_MS = 10000;
const CHECK_MS = 5000;

/** "<ms>-<seq>" ids, compared numerically. */
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am !== bm ? am - bm : as - bs;
}

function isId(value) {
  return typeof value === "string" && /^\d+-\d+$/.test(value);
}

export class LiveConnection extends EventTarget {
  constructor() {
    super();
    this.lastId = null;
    this.failures = 0;
    this.state = "offline";
    this.socket = null;
    this.timer = null;
    this.stopped = true;
    this.watchdog = 0;
    this.lastFrame = 0; // performance.now() of the last frame received
    this.probeAt = 0; // when the page's ping went out, unanswered yet
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.watchdog = setInterval(() => this.check(false), CHECK_MS);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.socket) this.socket.close(1000);
    this.socket = null;
    this.setState("offline");
  }

  /** The browser is back online: reconnect at once instead of waiting for the retry timer; an open connection is
   * asked whether it still answers (after a network change it may be dead without knowing it). */
  reconnectNow() {
    if (this.stopped) return;
    if (this.socket) {
      this.check(true);
      return;
    }
    clearTimeout(this.timer);
    this.connect();
  }

  /** A connection on which nothing arrived for SILENCE_MS (or any, when `now`) is pinged; one that did not answer
   * within PROBE_MS is given up and replaced: the page only receives, so its TCP has nothing to time out on, and a
   * path that died without a close (a laptop resumed on another network, a NAT that forgot it) read "live" forever. */
  check(now) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const at = performance.now();
    if (this.probeAt) {
      if (at - this.probeAt < PROBE_MS) return;
      this.socket = null; // its close event, whenever it comes, is no longer ours
      socket.close(CLOSE_SILENT, "no answer");
      this.onClose(CLOSE_SILENT, "no answer");
      return;
    }
    if (now || at - this.lastFrame >= SILENCE_MS) {
      this.probeAt = at;
      socket.send(JSON.stringify({ type: "ping" }));
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  connect() {
    const target = new URL("ws/events", document.baseURI);
    target.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    target.searchParams.set("v", "2"); // batched frames: one message per tick instead of one per event
    if (this.lastId) target.searchParams.set("last_event_id", this.lastId);
    let socket;
    try {
      socket = new WebSocket(target);
    } catch {
      this.retry(null);
      return;
    }
    this.socket = socket;
    this.lastFrame = performance.now();
    this.probeAt = 0;
    socket.addEventListener("message", (msg) => {
      if (this.socket !== socket) return;
      this.lastFrame = performance.now();
      this.probeAt = 0;
      this.onFrame(msg.data);
    });
    socket.addEventListener("close", (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onClose(ev.code, ev.reason);
    });
  }

  onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "event":
        this.accept(frame.id, frame.event);
        break;
      case "events":
        for (const item of frame.events || []) this.accept(item.id, item.event);
        break;
      case "live":
        this.failures = 0;
        // Live events follow this position: a reconnect resumes from it, so what is written while the exporter is
        // away reaches the page also when it had received no event yet (a quiet feed) and had no id of its own.
        if (isId(frame.last_event_id) && (this.lastId === null || compareIds(frame.last_event_id, this.lastId) > 0)) {
          this.lastId = frame.last_event_id;
        }
        this.setState("live");
        this.dispatchEvent(new CustomEvent("live"));
        break;
      case "gap":
        this.dispatchEvent(new CustomEvent("gap", { detail: frame.message || "events were trimmed" }));
        break;
      case "error":
        if (frame.code === "future_id") {
          // Another (or a flushed) Redis: the old position means nothing there; start again from now.
          this.lastId = null;
          this.dispatchEvent(new CustomEvent("gap", { detail: "the event stream was reset (Redis restarted empty, " +
            "or replaced): events recorded since the reset may be missing; continuing with new events" }));
        }
        this.dispatchEvent(new CustomEvent("server-error", { detail: frame }));
        break;
      default:
        break;
    }
  }

  accept(id, event) {
    if (typeof id !== "string") return;
    if (this.lastId !== null && compareIds(id, this.lastId) <= 0) return;
    this.lastId = id;
    this.dispatchEvent(new CustomEvent("event", { detail: { id, event } }));
  }

  onClose(code, reason) {
    this.dispatchEvent(new CustomEvent("closed", { detail: { code, reason } }));
    if (this.stopped) return;
    if (code === CLOSE_UNAUTHORIZED) {
      this.stopped = true;
      this.setState("offline");
      document.dispatchEvent(new CustomEvent("auth-required"));
      return;
    }
    this.retry(code);
  }

  retry(code) {
    this.failures += 1;
    // A slow-consumer close is expected to resume at once; other failures back off up to 10 s.
    const base = code === CLOSE_SLOW_CONSUMER && this.failures === 1 ? 100 : 250 * 2 ** Math.min(this.failures, 6);
    const delay = Math.min(10000, base) * (0.8 + Math.random() * 0.4);
    this.setState(this.failures > 4 || !navigator.onLine ? "offline" : "reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
