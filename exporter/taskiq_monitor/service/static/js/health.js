// healthy / degraded / failing from the alert rules' thresholds (GET /api/v1/ui/config). The rule is documented
// in docs/ui.md ("Health colour").

export const LEVELS = ["failing", "degraded", "healthy"];

export function health(task, t) {
  const w = task.window || {};
  const finished = (w.success || 0) + (w.failed || 0);
  const failureRatio = finished ? (w.failed || 0) / finished : 0;
  const retryRatio = finished ? (w.retried || 0) / finished : 0;
  const age = task.oldest_pending_age_seconds || 0;
  const failing = [];
  const degraded = [];
  if (finished >= t.failure_min_volume && failureRatio > t.failure_ratio_threshold) {
    failing.push(`${Math.round(failureRatio * 100)} % failed`);
  }
  if (age > t.oldest_pending_max_age_seconds) failing.push("oldest pending too old");
  if (!failing.length) {
    if ((w.failed || 0) > 0 && failureRatio > 1 - t.success_ratio_warning) {
      degraded.push(`success rate below ${Math.round(t.success_ratio_warning * 100)} %`);
    }
    if (task.pending >= t.backlog_min_pending) degraded.push("backlog");
    if (finished && retryRatio > t.retry_ratio_threshold) degraded.push("many retries");
  }
  const level = failing.length ? "failing" : degraded.length ? "degraded" : "healthy";
  return { level, reasons: failing.length ? failing : degraded };
}
