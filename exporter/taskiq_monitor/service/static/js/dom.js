// DOM helpers. Everything that came from a task is inserted as text (textContent / text nodes), never as HTML.

/** el("td", {class: "num", "data-field": "x"}, "text", otherNode) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) append(node, child);
  return node;
}

export function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  node.append(child instanceof Node ? child : document.createTextNode(String(child)));
}

export function setText(node, value) {
  node.textContent = value === null || value === undefined ? "" : String(value);
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  // Rounded to the unit shown before it is split or compared: 119.7 s is "2 min 0 s", never "1 min 60 s", and
  // 0.9996 s is "1.00 s", never "1000 ms".
  const ms = Math.round(seconds * 1000);
  if (ms < 1000) return `${ms} ms`;
  const hundredths = Math.round(seconds * 100);
  if (hundredths < 1000) return `${(hundredths / 100).toFixed(2)} s`;
  const tenths = Math.round(seconds * 10);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return fmtDuration(seconds);
}

/** A ratio as a percentage, cut (not rounded) to 0.1 %: a value is never shown on a line it has not reached —
 * 98.96 % is "98.9 %" (below a 99 % line, as the health reason says), 99.97 % is not "100 %", and one failure in
 * 5,000 is "< 0.1 %", not "0.0 %". Only 0 and 1 read "0 %" and "100 %". */
export function fmtRate(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "–";
  if (ratio <= 0) return "0 %";
  if (ratio >= 1) return "100 %";
  const tenths = Math.floor(ratio * 1000);
  return tenths === 0 ? "< 0.1 %" : `${(tenths / 10).toFixed(1)} %`;
}

const NBSP = "\u00a0"; // a number and its unit never part at a line break ("24 / h" in a narrow card)

export function fmtWindow(seconds) {
  if (seconds % 86400 === 0) return seconds === 86400 ? `24${NBSP}h` : `${seconds / 86400}${NBSP}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}${NBSP}h`;
  return `${Math.round(seconds / 60)}${NBSP}min`;
}

/** unix seconds or RFC 3339 -> "HH:MM:SS.mmm" today, else "YYYY-MM-DD HH:MM:SS" (local time). */
export function fmtTime(value, withMs = false) {
  if (value === null || value === undefined) return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    (withMs ? `.${pad(date.getMilliseconds(), 3)}` : "");
  const today = new Date();
  if (date.toDateString() === today.toDateString()) return time;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

export function toUnix(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "number") return value;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms / 1000;
}

export function worker(w) {
  if (!w || (!w.host && !w.pid)) return "–";
  return `${w.host || "?"}:${w.pid || "?"}`;
}

export const LOST_TITLE = "Its worker stopped (killed or crashed), its message expired, or its final event was " +
  "dropped: the outcome of this attempt is unknown.";

/** A status pill; an attempt the state no longer holds (``lost`` from the history API) says so. */
export function statusPill(status, lost = false) {
  if (!lost) return el("span", { class: `pill ${status}` }, status);
  return el("span", { class: `pill ${status} lost`, title: LOST_TITLE }, `${status} · lost`);
}

/** Notices above the views, one per key (replaced or removed by key). */
export function notice(key, level, text) {
  const box = document.getElementById("notices");
  let node = box.querySelector(`[data-notice="${key}"]`);
  if (!text) {
    if (node) node.remove();
    return;
  }
  if (!node) {
    node = el("p", { "data-notice": key, role: level === "error" ? "alert" : "status" });
    box.append(node);
  }
  node.className = `notice ${level}`;
  setText(node, text);
}

export function taskLink(taskId, taskName) {
  const params = new URLSearchParams();
  if (taskName) params.set("task_name", taskName);
  const query = params.toString();
  return `#/task/${encodeURIComponent(taskId)}${query ? `?${query}` : ""}`;
}
