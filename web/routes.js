// The pack's own routes (/fal/..., nodes/routes.py) as seen from the front end.
import { errorLine } from "./lib/format.js";

export function createRoutes(frontend) {
  /** One route -> {ok, status, body}; status 0: no answer. */
  async function fetchRoute(path, options = {}) {
    let response;
    try {
      response = await frontend.fetchApi(`/fal${path}`, {
        ...options,
        headers: { "Content-Type": "application/json", ...(options.headers ?? {}) },
        cache: "no-store",
      });
    } catch {
      return { ok: false, status: 0, body: null };
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return { ok: response.ok, status: response.status, body };
  }

  /** JSON from one route; a failure throws one readable sentence (`explain(status, body)`). */
  async function route(path, options = {}, explain = errorLine) {
    const { ok, status, body } = await fetchRoute(path, options);
    if (!ok) throw new Error(explain(status, body));
    return body;
  }

  return { fetchRoute, route };
}
