// healthy / degraded / failing, the rule of taskiq_monitor.mixin.config (the same thresholds colour the Grafana
// dashboards and drive the alert rules); served by GET /api/v1/ui/config. Documented in docs/ui.md.
import { fmtRate } from "./dom.js";

export const LEVELS = ["failing", "degraded", "healthy"];

export function health(task, t) {
  const w = task.window || {};
  const finished = (w.success || 0) + (w.failed || 0);
  const ratio = finished ? (w.success || 0) / finished : null;
  const age = task.pending ? task.oldest_pending_age_seconds || 0 : 0;
  // A threshold as configured; the measured rate as the card shows it (cut, not rounded: never "99 % < 99 %").
  const pct = (x) => `${Math.round(x * 1000) / 10} %`;
  if (ratio !== null && ratio < t.success_ratio_warning) {
    return { level: "failing", reasons: [`success rate ${fmtRate(ratio)} < ${pct(t.success_ratio_warning)}`] };
  }
  const reasons = [];
  if (ratio !== null && ratio < t.success_ratio_ok) {
    reasons.push(`success rate ${fmtRate(ratio)} < ${pct(t.success_ratio_ok)}`);
  }
  if (task.pending > t.backlog_min_pending) reasons.push(`${task.pending} pending > ${t.backlog_min_pending}`);
  if (age > t.oldest_pending_max_age_seconds) reasons.push(`oldest pending > ${t.oldest_pending_max_age_seconds} s`);
  return { level: reasons.length ? "degraded" : "healthy", reasons };
}
