// Text for the fal key panel and the result panel on fal nodes. Pure functions,
// no ComfyUI imports, so `node --test web/tests/` checks them.

/** What the FalKey node's combo offers for the FAL_KEY environment variable. */
export const ENV_CHOICE = "environment FAL_KEY";

/** 1234567 -> "1.2 MB". */
export function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let value = Math.max(0, Number(n) || 0);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Seconds -> "4.1s", "2m 05s", "1h 02m". */
export function formatElapsed(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  if (s < 60) return `${s.toFixed(1)}s`;
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${String(whole % 60).padStart(2, "0")}s`;
  return `${Math.floor(whole / 3600)}h ${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")}m`;
}

function middleEllipsis(text, max) {
  if (text.length <= max) return text;
  const keep = max - 1;
  const head = Math.ceil(keep / 2);
  return text.slice(0, head) + "…" + text.slice(text.length - (keep - head));
}

/** A result URL short enough for a node: host and file name; data URIs by type and size. */
export function shortUrl(url, max = 48) {
  const text = String(url ?? "");
  if (text.startsWith("data:")) {
    const comma = text.indexOf(",");
    const head = text.slice(5, comma < 0 ? undefined : comma);
    const type = head.split(";")[0] || "data";
    const payload = comma < 0 ? 0 : text.length - comma - 1;
    const bytes = head.includes(";base64") ? Math.floor((payload * 3) / 4) : payload;
    // The node sends inline results cut to "data:<type>;base64," (no bytes) to keep messages small.
    return bytes > 0 ? `inline ${type} (${formatBytes(bytes)})` : `inline ${type} (not kept by fal)`;
  }
  try {
    const parsed = new URL(text);
    const file = parsed.pathname.split("/").filter(Boolean).pop() ?? "";
    return middleEllipsis(file ? `${parsed.host}/…/${file}` : parsed.host, max);
  } catch {
    return middleEllipsis(text, max);
  }
}

function list(value) {
  if (value === undefined || value === null) return [];
  return (Array.isArray(value) ? value : [value]).map((v) => String(v ?? "")).filter(Boolean);
}

/**
 * A fal node's UI output -> what its result panel shows, or null when there is nothing.
 * output: {fal_urls: [...], fal_request_ids: [...], fal_status: ["done in 4.1s · 1 image(s)"]}
 */
export function resultView(output) {
  if (!output || typeof output !== "object") return null;
  const urls = list(output.fal_urls);
  const requestIds = list(output.fal_request_ids);
  const status = list(output.fal_status);
  if (!urls.length && !requestIds.length) return null;
  return {
    summary: status.length ? status[status.length - 1].split("\n")[0] : `${urls.length} result(s)`,
    urls: urls.map((url) => ({ url, label: shortUrl(url), inline: url.startsWith("data:") })),
    requestIds,
    // What "copy all" puts on the clipboard: one URL a line, like the node's `urls` output.
    copyText: urls.join("\n"),
  };
}

/** A saved key's row in the key panel: its name and its last four characters. */
export function keyLabel(row) {
  const hint = row?.hint ? ` ${row.hint}` : "";
  return `${row?.name ?? ""}${hint}`;
}

const TONES = { valid: "ok", rejected: "bad", unreachable: "warn" };

/** The answer of POST /fal/keys/test -> {tone, text}: one sentence for the panel. */
export function keyTestLine(answer) {
  const result = answer?.result ?? "unreachable";
  const word = { valid: "valid", rejected: "rejected", unreachable: "not checked" }[result] ?? result;
  const name = answer?.name === ENV_CHOICE ? "FAL_KEY" : `'${answer?.name ?? "?"}'`;
  const message = String(answer?.message ?? "").replace(/\s+/g, " ").trim();
  return { tone: TONES[result] ?? "warn", text: `${name} is ${word}${message ? ": " + message : ""}.` };
}

/** A failed route call -> one sentence (the server's own sentence when it sent one). */
export function errorLine(status, body) {
  if (body && typeof body === "object" && typeof body.error === "string" && body.error) {
    const text = body.error.trim();
    return text.endsWith(".") ? text : text + ".";
  }
  if (status === 404) return "The fal key routes are missing; restart ComfyUI after updating the pack.";
  if (!status) return "ComfyUI could not be reached; is it still running?";
  return `ComfyUI answered ${status}; see its console for details.`;
}

/** The FalKey combo's values for these saved names. */
export function keyChoices(names) {
  return [ENV_CHOICE, ...[...new Set(list(names))].sort()];
}
