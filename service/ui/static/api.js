// The public REST API, as the page calls it: the same routes, keys and scopes as any other client.
const KEY = "hybrid.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

// The API's base: the page is served at <base>/ui/, so the API is one folder up (works behind a path prefix too).
const BASE = new URL("..", window.location.href).pathname.replace(/\/$/, "");

export async function call(method, path, body = undefined, { signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(BASE + path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

export const api = {
  indexes: () => call("GET", "/v1/indexes"),
  index: (name) => call("GET", `/v1/indexes/${encodeURIComponent(name)}`),
  search: (name, body, opts) => call("POST", `/v1/indexes/${encodeURIComponent(name)}/search`, body, opts),
  queries: (name) => call("GET", `/v1/indexes/${encodeURIComponent(name)}/queries`),
  qrels: (name, qid) => call("GET", `/v1/indexes/${encodeURIComponent(name)}/qrels?query_id=${encodeURIComponent(qid)}`),
  leaderboard: () => call("GET", "/v1/leaderboard"),
  compare: (dataset, a, b, metric) => call("GET", "/v1/leaderboard/compare?" + new URLSearchParams(
    { dataset, a, b, ...(metric ? { metric } : {}) })),
  openapi: () => call("GET", "/openapi.json"),
};
