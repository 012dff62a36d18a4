// The owner's server-side settings in Settings → fal (GET/POST /fal/server-settings):
// which fal-compatible servers a workflow may name, a proxy, and the spend and cache
// ceilings no workflow can raise. Pure functions, no ComfyUI imports; the server checks
// everything again and answers 400 {"error": sentence} for what it refuses.

/** The number fields the panel edits, in order (fields the server does not send are left out). */
export const NUMBER_FIELDS = [
  { name: "max_usd_per_prompt", label: "Most one prompt may spend", unit: "USD", min: 0, step: 0.5,
    hint: "0: no limit. A workflow's fal Settings can only lower it." },
  { name: "max_usd_per_day", label: "Most this server may spend a day", unit: "USD", min: 0, step: 1,
    hint: "0: no limit. Counted across restarts." },
  { name: "cache_max_gb", label: "Result cache size", unit: "GB", min: 0.1, step: 0.5,
    hint: "The least recently used results are dropped beyond it." },
];

/** The text of a number input -> {value} or {error: one sentence}. */
export function parseNumberField(field, text) {
  const raw = String(text ?? "").trim().replace(",", ".");
  const value = Number(raw);
  if (!raw || !Number.isFinite(value)) return { error: `${field.label}: type a number.` };
  if (value < field.min) return { error: `${field.label}: at least ${field.min}.` };
  return { value };
}

/** A server URL the owner typed -> {url} (scheme and host, trailing slash) or {error}. */
export function parseServerUrl(text) {
  const raw = String(text ?? "").trim();
  if (!raw) return { error: "Type a server URL, e.g. http://127.0.0.1:8765/." };
  let url;
  try {
    url = new URL(raw);
  } catch {
    return { error: `'${raw}' is not a URL; write it with http:// or https://.` };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { error: `'${raw}' must start with http:// or https://.` };
  }
  if (url.username || url.password) {
    return { error: "Leave the user name and password out of the server URL." };
  }
  const path = url.pathname.endsWith("/") ? url.pathname : url.pathname + "/";
  return { url: `${url.protocol}//${url.host}${path}` };
}

/** `list` with `url` added at the end (unchanged when it is already there). */
export function addServer(list, url) {
  const current = Array.isArray(list) ? list : [];
  return current.includes(url) ? [...current] : [...current, url];
}

/** `list` without its index-th entry. */
export function removeServer(list, index) {
  const current = Array.isArray(list) ? [...list] : [];
  if (index >= 0 && index < current.length) current.splice(index, 1);
  return current;
}

/** A failed GET/POST of the settings -> one sentence for the panel. */
export function serverSettingsError(status, body) {
  if (body && typeof body === "object" && typeof body.error === "string" && body.error.trim()) {
    const text = body.error.trim();
    return text.endsWith(".") ? text : text + ".";
  }
  if (status === 404) {
    return "This ComfyUI server's fal pack has no server settings yet (no /fal/server-settings " +
      "route): update the pack and restart ComfyUI.";
  }
  if (!status) return "ComfyUI could not be reached; is it still running?";
  return `ComfyUI answered ${status}; see its console for details.`;
}

/** The fields of `edited` that differ from `saved`: what POST sends. */
export function changedSettings(saved, edited) {
  const out = {};
  for (const [name, value] of Object.entries(edited ?? {})) {
    if (JSON.stringify(value) !== JSON.stringify(saved?.[name])) out[name] = value;
  }
  return out;
}

/**
 * GET /fal/server-settings' `in_force` ({kind: "fal" | "server" | "proxy" | "error", url,
 * from: the environment variable or "proxy_url", error}) -> {head, detail}: the server runs
 * go to when a workflow names none, and where that choice comes from. null: an older
 * server that does not say.
 */
export function inForceLines(inForce) {
  if (!inForce || typeof inForce !== "object") return null;
  const { kind, url, from } = inForce;
  if (kind === "error") {
    return { head: "No fal calls can go out", detail: String(inForce.error ?? "") };
  }
  if (kind === "server") {
    return { head: url, detail: `From ${from} in ComfyUI's environment: runs whose fal Settings leave ` +
      `base_url empty go to this server, with your fal key. Unset ${from} and restart ComfyUI to use fal.` };
  }
  if (kind === "proxy") {
    const where = from === "proxy_url" ? "the proxy saved below" : `${from} in ComfyUI's environment`;
    return { head: url, detail: `From ${where}: every fal call goes through this proxy, which adds its ` +
      `own key (the pack sends none).` };
  }
  return { head: "fal's own hosts", detail: "No COMFYUI_FAL_BASE_URL, COMFYUI_FAL_PROXY_URL or proxy is " +
    "set on this server: runs go to fal, unless a workflow's base_url names a server allowed below." };
}
