// Same-origin JSON calls. Authorisation is the HttpOnly session cookie (sent by the browser), never a header
// the page would have to keep the token for.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function url(path, params) {
  const target = new URL(path, document.baseURI);
  for (const [name, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) target.searchParams.append(name, item);
  }
  return target;
}

function message(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (detail && typeof detail.message === "string") return detail.message;
  if (Array.isArray(detail) && detail.length) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `HTTP ${status}`;
}

export async function getJSON(path, params, init = {}) {
  let response;
  try {
    response = await fetch(url(path, params), { credentials: "same-origin", cache: "no-store", ...init });
  } catch (err) {
    throw new ApiError(0, "the exporter cannot be reached");
  }
  let body = null;
  if (response.status !== 204) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401) document.dispatchEvent(new CustomEvent("auth-required"));
    throw new ApiError(response.status, message(response.status, body));
  }
  return body;
}

export function sendJSON(method, path, body) {
  return getJSON(path, null, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}
