// Settings → fal → Server: what the owner of this ComfyUI decides on the server (GET/POST
// /fal/server-settings): the server fal calls go to now and where that choice comes from,
// the servers a workflow may send the key to, a proxy, and the spend and cache ceilings.
import { el, sayer } from "./dom.js";
import {
  addServer, changedSettings, inForceLines, NUMBER_FIELDS, parseNumberField, parseServerUrl, removeServer,
  serverSettingsError,
} from "./lib/server_settings.js";

export const SERVER_STYLE = `
.fal-server { display: flex; flex-direction: column; gap: 8px; width: min(560px, 60vw); font-size: 13px; }
.fal-server h4 { margin: 6px 0 0; font-size: 13px; }
.fal-server-row { display: flex; align-items: center; gap: 8px; }
.fal-server-row label { flex: 1; }
.fal-server-row input[type=number] { width: 96px; }
.fal-server input { padding: 4px 6px; border-radius: 4px; border: 1px solid var(--border-color, #555);
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); }
.fal-server-url { flex: 1; font-family: monospace; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.fal-server-force { padding: 4px 6px; border-radius: 6px; background: var(--comfy-input-bg, #222); }
`;

const stopKeys = (input) => input.addEventListener("keydown", (e) => e.stopPropagation());

export function serverSettingsPanel({ routes }) {
  const message = el("div", { class: "fal-keys-msg" });
  const body = el("div", { class: "fal-server-body" });
  const say = sayer(message);
  let saved = null;

  async function save(changes, done) {
    if (!Object.keys(changes).length) return;
    try {
      show(await routes.route("/server-settings", { method: "POST", body: JSON.stringify(changes) },
        serverSettingsError));
      say(done, "ok");
    } catch (error) {
      say(error.message, "bad");
    }
  }

  function inForce() {
    const lines = inForceLines(saved.in_force);
    if (!lines) return [];
    const { head, detail } = lines;
    return [el("h4", {}, "Where fal calls go now"),
      el("div", { class: "fal-server-force" }, el("div", { class: "fal-server-url" }, head),
        detail ? el("div", { class: "fal-keys-note" }, detail) : null)];
  }

  function serverList() {
    const servers = saved.allowed_servers ?? [];
    const rows = servers.map((url, i) => {
      const remove = el("button", { class: "fal-mini", type: "button" }, "Remove");
      remove.addEventListener("click", () => save({ allowed_servers: removeServer(servers, i) },
        `Removed ${url}: workflows can no longer send your key there.`));
      return el("div", { class: "fal-keys-row" }, el("span", { class: "fal-server-url", title: url }, url), remove);
    });
    const input = el("input", { name: "server", placeholder: "http://127.0.0.1:8765/", spellcheck: "false",
      style: { flex: "1" } });
    stopKeys(input);
    const form = el("form", { class: "fal-keys-add", autocomplete: "off" }, input,
      el("button", { class: "fal-mini", type: "submit" }, "Allow"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      event.stopPropagation();
      const parsed = parseServerUrl(input.value);
      if (parsed.error) return say(parsed.error, "bad");
      save({ allowed_servers: addServer(servers, parsed.url) },
        `Allowed ${parsed.url}: a workflow's base_url may name it, and it receives your fal key.`);
    });
    return [
      el("h4", {}, "Other servers a workflow may send your key to"),
      el("div", { class: "fal-keys-note" }, "A fal Settings node's base_url must be the server above, " +
        "fal's own hosts, or one of these. Workflows from others cannot add to this list."),
      ...(rows.length ? rows : [el("div", { class: "fal-keys-empty" }, "None saved here.")]),
      form,
    ];
  }

  function proxyRow() {
    if (!("proxy_url" in saved)) return [];
    const input = el("input", { name: "proxy_url", placeholder: "none", spellcheck: "false", style: { flex: "1" } });
    input.value = saved.proxy_url ?? "";
    stopKeys(input);
    input.addEventListener("change", () => {
      const text = input.value.trim();
      const parsed = text ? parseServerUrl(text) : { url: "" };
      if (parsed.error) return say(parsed.error, "bad");
      save({ proxy_url: parsed.url }, parsed.url ? `Every fal call now goes through ${parsed.url}.`
        : "No proxy: fal calls go to fal directly.");
    });
    return [el("h4", {}, "Proxy"), el("div", { class: "fal-server-row" },
      el("label", { title: "A fal-js style proxy (x-fal-target-url); it adds its own key." }, "Send every fal call through"),
      input)];
  }

  function numberRows() {
    return NUMBER_FIELDS.filter((field) => field.name in saved).map((field) => {
      const input = el("input", { type: "number", name: field.name, min: String(field.min), step: String(field.step) });
      input.value = String(saved[field.name]);
      stopKeys(input);
      input.addEventListener("change", () => {
        const parsed = parseNumberField(field, input.value);
        if (parsed.error) return say(parsed.error, "bad");
        save(changedSettings(saved, { [field.name]: parsed.value }), `${field.label}: ${parsed.value} ${field.unit}.`);
      });
      return el("div", { class: "fal-server-row", title: field.hint },
        el("label", {}, `${field.label} (${field.unit})`), input);
    });
  }

  function show(answer) {
    saved = answer;
    const spent = Number(answer.spent_today);
    body.replaceChildren(...inForce(), ...serverList(), ...proxyRow(), el("h4", {}, "Limits"), ...numberRows(),
      Number.isFinite(spent) ? el("div", { class: "fal-keys-note" }, `Spent today: ≈ $${spent.toFixed(2)}.`) : null);
  }

  routes.route("/server-settings", {}, serverSettingsError).then(show, (error) => say(error.message, "bad"));
  return el("div", { class: "fal-server" }, body, message);
}
