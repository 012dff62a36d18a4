// The feature modules against a fake DOM and fake routes: what each panel shows and sends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { installDom, settle } from "./fake_dom.mjs";
import { makeApi, makeApp, makeNode } from "./fake_comfy.mjs";
import { createFrontend } from "../lib/frontend.js";
import { createRoutes } from "../routes.js";
import { keyPanel } from "../keys.js";
import { spendPanel, openSpendDialog } from "../spend.js";
import { serverSettingsPanel } from "../server_settings.js";
import { addSwatches } from "../swatches.js";
import { createPriceBadges } from "../badges.js";
import { inForceLines } from "../lib/server_settings.js";
import { spendView } from "../lib/price.js";

/** routes answered by `answers[path]` (a value or a function of the request body). */
function setUp(answers, nodes = []) {
  installDom();
  const sent = [];
  const api = makeApi(async (path, options = {}) => {
    const body = options.body ? JSON.parse(options.body) : undefined;
    sent.push([options.method ?? "GET", path, body]);
    const answer = answers[path.replace(/^\/fal/, "")];
    if (answer === undefined) return { ok: false, status: 404, body: null };
    return { ok: true, status: 200, body: typeof answer === "function" ? answer(body) : answer };
  });
  const frontend = createFrontend({ app: makeApp(nodes), api });
  return { frontend, routes: createRoutes(frontend), sent, api };
}

test("keys: saved keys by name and last four, the env key, and adding one updates fal Key nodes", async () => {
  const keyNode = makeNode(1, { type: "FalKey", widgets: [{ name: "key_name", options: { values: ["environment FAL_KEY"] } }] });
  const listing = { keys: [{ name: "work", hint: "…a1b2" }], env: { set: true, choice: "environment FAL_KEY", hint: "…9z9z" } };
  const { frontend, routes, sent } = setUp({
    "/keys": (body) => (body ? { keys: [...listing.keys, { name: body.name, hint: "…c3d4" }], added: body.name } : listing),
  }, [keyNode]);
  let added = 0;
  const panel = keyPanel({ frontend, routes, onKeyAdded: () => added++, confirm: () => true });
  await settle();
  const rows = panel.querySelectorAll(".fal-keys-row");
  assert.deepEqual(rows.map((r) => r.querySelector(".fal-keys-name").textContent), ["work", "environment FAL_KEY"]);
  assert.equal(rows[0].querySelector(".fal-keys-hint").textContent, "…a1b2");
  panel.querySelector("[name=name]").value = "home";
  panel.querySelector("[name=key]").value = "id:secret";
  panel.querySelector("form").dispatch("submit");
  await settle();
  assert.deepEqual(sent.at(-2), ["POST", "/fal/keys", { name: "home", key: "id:secret" }]);
  assert.equal(panel.querySelector("[name=key]").value, "");           // the key leaves the page
  assert.match(panel.querySelector(".fal-keys-msg").textContent, /Saved 'home' \(…c3d4\)/);
  assert.deepEqual(keyNode.widgets[0].options.values, ["environment FAL_KEY", "home", "work"]);
  assert.equal(added, 1);
});

test("spend: one row per call, the total, and the price source", async () => {
  const spend = { entries: [
    { at: 0, endpoint: "fal-ai/post-processing/sharpen", title: "fal Sharpen", request_id: "req-1", cached: false, estimated_usd: 0.002 },
    { at: 0, endpoint: "fal-ai/post-processing/sharpen", title: "fal Sharpen", request_id: "", cached: true, estimated_usd: 0 },
  ], total: 0.002, billed: 1, cached: 1, report: "2 calls" };
  const { frontend, routes } = setUp({ "/spend": spend });
  const panel = spendPanel({ frontend, routes, prices: () => null });
  await settle();
  const cells = panel.querySelectorAll("tr").slice(1).map((tr) => tr.querySelectorAll("td").map((td) => td.textContent).slice(1, 5));
  assert.deepEqual(cells.map((c) => [c[0], c[1], c[3]]), [["fal Sharpen", "req-1", "$0.002"], ["fal Sharpen", "—", "$0"]]);
  assert.deepEqual(panel.querySelectorAll("tr").map((tr) => tr.className), ["", "", "fal-spend-cached"]);
  assert.equal(panel.querySelectorAll("th").at(-1).textContent, "billed by fal");
  // The total line is lib/price.js spendView's (its wording is the ledger's, issue 20).
  assert.equal(panel.querySelector(".fal-spend-total").textContent, spendView(spend).totalLine);
  assert.match(spendView(spend).totalLine, /\$0\.002 this session/);
  const overlay = openSpendDialog({ frontend, routes });
  assert.ok(overlay.isConnected);
  overlay.querySelectorAll("button").find((b) => b.textContent === "Close").click();
  assert.equal(overlay.isConnected, false);
});

test("item 6: the server panel names the server in force and where it came from", async () => {
  const settings = { allowed_servers: [], proxy_url: "", max_usd_per_prompt: 5, max_usd_per_day: 20, cache_max_gb: 2,
    spent_today: 0.5, in_force: { kind: "server", url: "http://127.0.0.1:9195/", from: "COMFYUI_FAL_BASE_URL" } };
  const { routes, sent } = setUp({ "/server-settings": (body) => ({ ...settings, ...body }) });
  const panel = serverSettingsPanel({ routes });
  await settle();
  const force = panel.querySelector(".fal-server-force");
  assert.equal(force.querySelector(".fal-server-url").textContent, "http://127.0.0.1:9195/");
  assert.match(force.textContent, /From COMFYUI_FAL_BASE_URL in ComfyUI's environment/);
  assert.doesNotMatch(panel.textContent, /only fal's own hosts/);      // what it said before
  const perDay = panel.querySelector("[name=max_usd_per_day]");
  perDay.value = "50";
  perDay.dispatch("change");
  await settle();
  assert.deepEqual(sent.at(-1), ["POST", "/fal/server-settings", { max_usd_per_day: 50 }]);
  assert.deepEqual(inForceLines({ kind: "fal", url: "", from: "" }).head, "fal's own hosts");
  assert.match(inForceLines({ kind: "proxy", url: "http://p/", from: "proxy_url" }).detail, /proxy saved below/);
  assert.match(inForceLines({ kind: "proxy", url: "http://p/", from: "COMFYUI_FAL_PROXY_URL" }).detail,
    /COMFYUI_FAL_PROXY_URL in ComfyUI's environment/);
  assert.equal(inForceLines(undefined), null);
});

test("swatches follow the colours text; a click removes one", () => {
  const { frontend } = setUp({});
  const node = makeNode(1, { type: "FalRecraftV3ImageToImage", widgets: [{ name: "colors", value: "#ff0000, 0 128 255, nope" }] });
  const box = addSwatches(frontend, node);
  const swatches = () => box.querySelectorAll("span.fal-swatch").filter((s) => !s.classList.contains("fal-swatch-add"));
  assert.deepEqual(swatches().map((s) => s.style.background ?? "bad"), ["#ff0000", "#0080ff", "bad"]);
  swatches()[0].click();
  assert.equal(node.widgets[0].value, "0 128 255, nope");
  assert.equal(swatches().length, 2);
});

test("item 3: one chip per fal node from /fal/prices; Nodes 2.0 is told to recompute when prices arrive", async () => {
  const sharpen = makeNode(1, { type: "FalSharpen", widgets: [{ name: "sharpen_radius", value: 1 }] });
  sharpen.falEndpoint = true;
  const prices = { prices: { "fal-ai/post-processing/sharpen": { unit_price: 0.002, unit: "image", source: "fal" } },
    nodes: { FalSharpen: { endpoint_id: "fal-ai/post-processing/sharpen", multi: false } }, can_ask_fal: true, not_listed: [] };
  const { frontend, routes } = setUp({ "/prices": prices }, [sharpen]);
  const badges = createPriceBadges({ frontend, routes });
  badges.addPriceBadge(sharpen);
  assert.equal(sharpen.badges[0]().text, "");                  // no prices yet: nothing shown
  const before = frontend.badgeVersion();
  await badges.load();
  // After a page reload the chips were computed before the prices came, and never again.
  assert.ok(frontend.badgeVersion() > before);
  assert.equal(sharpen.badges[0]().text, "≈ $0.002");
  const edited = frontend.badgeVersion();
  sharpen.widgets[0].callback(2);                              // the Vue edit path calls only this
  assert.ok(frontend.badgeVersion() > edited);
  badges.noteRun(sharpen, { fal_items: [2], fal_cost: [0.004], fal_cached: [0], fal_request_ids: ["a", "b"] });
  assert.equal(sharpen.badges[0]().text, "≈ $0.004 · last $0.004");
});
