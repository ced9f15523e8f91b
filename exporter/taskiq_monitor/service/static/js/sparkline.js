// A tiny inline SVG sparkline: throughput (success + failed + retried) and failures per minute.

const SVG = "http://www.w3.org/2000/svg";
const W = 120;
const H = 30;

function points(values, max) {
  const step = values.length > 1 ? W / (values.length - 1) : W;
  return values.map((v, i) => `${(i * step).toFixed(1)},${(H - 1 - (v / max) * (H - 3)).toFixed(1)}`).join(" ");
}

export function sparkline(series, label) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  const success = series.success || [];
  const failed = series.failed || [];
  const retried = series.retried || [];
  const total = success.map((v, i) => v + (failed[i] || 0) + (retried[i] || 0));
  const max = Math.max(1, ...total);
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const title = document.createElementNS(SVG, "title");
  title.textContent = `${label}: ${sum(total)} finished, ${sum(failed)} failed in the last ${total.length} min`;
  svg.append(title);
  svg.setAttribute("aria-label", title.textContent);
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("class", "base");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", String(W));
  base.setAttribute("y1", String(H - 0.5));
  base.setAttribute("y2", String(H - 0.5));
  svg.append(base);
  for (const [cls, values] of [["total", total], ["failed", failed]]) {
    if (!values.length || (cls === "failed" && !sum(values))) continue; // no red line for no failures
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", points(values, max));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  return svg;
}
