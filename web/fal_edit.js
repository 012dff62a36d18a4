// comfyui-fal-edit front end:
//  - a "fal" page in ComfyUI's settings: add a named fal key, see saved keys by name and
//    last four characters, test one against fal, delete one (routes in nodes/routes.py);
//  - the owner's server settings on the same page (allowed servers, proxy, spend ceilings);
//  - the fal Key node's list follows those changes without reloading the page;
//  - once a fal node ran: its final status, result URLs (copyable) and fal request ids in
//    one panel that the node grows to hold (while it runs, ComfyUI's progress text shows
//    the status);
//  - the Recraft node's `colors` text gets swatches and a colour picker;
//  - every fal node shows one short chip: its price before it runs (following num_images
//    and, after a run, the real number of requests) and its last run's cost;
//  - "fal: spend this session" (command, menu, and a section of the fal settings page)
//    lists this session's fal calls from GET /fal/spend.
// Keys never pass through ComfyUI's settings store: the panel has no setting value.
// Every front-end API used here goes through lib/frontend.js (one fallback per generation).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { priceChip } from "./lib/badges.js";
import { addColor, labelColor, parseColors, removeColor } from "./lib/colors.js";
import { errorLine, keyChoices, keyLabel, keyTestLine, resultView } from "./lib/format.js";
import { createFrontend } from "./lib/frontend.js";
import { makeRoomMoves, resultPanelHeight, RESULT_ROW_PX } from "./lib/layout.js";
import { estimateRun, formatPriceBadge, lastRunFromOutput, nodePriceInfo, priceSourceLine, spendView } from "./lib/price.js";
import {
  addServer, changedSettings, NUMBER_FIELDS, parseNumberField, parseServerUrl, removeServer,
  serverSettingsError,
} from "./lib/server_settings.js";

const frontend = createFrontend({ app, api });

const EXTENSION = "comfyui-fal-edit";
const KEY_NODE = "FalKey";
const KEY_WIDGET = "key_name";
const RECRAFT_NODE = "FalRecraftV3ImageToImage";
const COLORS_WIDGET = "colors";
const FAL_CATEGORY = "fal/";

// -- small DOM helpers ----------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Plain http on a LAN address is not a secure context: no async clipboard there.
    const area = el("textarea", { style: { position: "fixed", opacity: "0" } });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

function copyButton(text, title = "copy") {
  const button = el("button", { class: "fal-mini", title, type: "button" }, "copy");
  button.addEventListener("click", async (event) => {
    event.stopPropagation();
    button.textContent = (await copyText(text)) ? "copied" : "failed";
    setTimeout(() => (button.textContent = "copy"), 1200);
  });
  return button;
}

const STYLE = `
.fal-keys { display: flex; flex-direction: column; gap: 8px; width: min(520px, 55vw); font-size: 13px; }
.fal-keys-row { display: flex; align-items: center; gap: 8px; padding: 4px 6px; border-radius: 6px;
  background: var(--comfy-input-bg, #222); }
.fal-keys-name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.fal-keys-hint { font-family: monospace; opacity: .75; }
.fal-keys-buttons { display: flex; gap: 6px; justify-content: flex-end; width: 118px; }
.fal-keys-empty { opacity: .7; font-style: italic; }
.fal-keys-add { display: flex; gap: 6px; align-items: center; }
.fal-keys-add input { min-width: 0; padding: 4px 6px; border-radius: 4px; border: 1px solid var(--border-color, #555);
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); }
.fal-keys-add input[name=name] { flex: 2; }
.fal-keys-add input[name=key] { flex: 3; font-family: monospace; }
.fal-keys-msg { min-height: 1.2em; }
.fal-keys-note { opacity: .7; font-size: 12px; }
.fal-ok { color: #5fcf80; } .fal-bad { color: #f07070; } .fal-warn { color: #e8b450; }
.fal-mini { padding: 2px 8px; border-radius: 4px; cursor: pointer; font-size: 12px;
  border: 1px solid var(--border-color, #555); background: var(--comfy-menu-bg, #333); color: var(--fg-color, #ddd); }
.fal-mini:disabled { opacity: .5; cursor: default; }
.fal-result { font-size: 11px; line-height: 1.5; overflow-y: auto; overflow-x: hidden; padding: 3px 4px;
  box-sizing: border-box; color: var(--fg-color, #ddd); }
.fal-result a { color: #7fb4ff; text-decoration: none; }
.fal-result-line { display: flex; gap: 6px; align-items: center; white-space: nowrap; height: ${RESULT_ROW_PX}px;
  box-sizing: border-box; }
.fal-result-line .fal-mini { padding: 0 8px; height: 18px; line-height: 16px; }
.fal-server { display: flex; flex-direction: column; gap: 8px; width: min(560px, 60vw); font-size: 13px; }
.fal-server h4 { margin: 6px 0 0; font-size: 13px; }
.fal-server-row { display: flex; align-items: center; gap: 8px; }
.fal-server-row label { flex: 1; }
.fal-server-row input[type=number] { width: 96px; }
.fal-server input { padding: 4px 6px; border-radius: 4px; border: 1px solid var(--border-color, #555);
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); }
.fal-server-url { flex: 1; font-family: monospace; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.fal-result-line > :first-child { overflow: hidden; text-overflow: ellipsis; flex: 1; }
.fal-result-id { font-family: monospace; opacity: .8; }
.fal-swatches { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; padding: 2px 4px; font-size: 11px; }
.fal-swatch { width: 22px; height: 22px; border-radius: 4px; cursor: pointer; border: 1px solid rgba(255,255,255,.35);
  display: inline-flex; align-items: center; justify-content: center; font-size: 12px; box-sizing: border-box; }
.fal-swatch:hover::after { content: "×"; }
.fal-swatch-bad { background: repeating-linear-gradient(45deg,#a33,#a33 4px,#622 4px,#622 8px); color: #fff; }
.fal-swatch-add { position: relative; overflow: hidden; background: transparent; border-style: dashed; color: var(--fg-color, #ddd); }
.fal-swatch-add:hover::after { content: none; }
.fal-swatch-add input { position: absolute; inset: 0; opacity: 0; cursor: pointer; width: 100%; height: 100%; border: 0; padding: 0; }
.fal-swatches-label { opacity: .6; margin-right: 2px; }
.fal-spend { display: flex; flex-direction: column; gap: 8px; width: min(900px, 90vw); font-size: 13px; }
.fal-spend-head { display: flex; align-items: center; gap: 8px; }
.fal-spend-head h3 { margin: 0; font-size: 15px; flex: 1; }
.fal-spend-table { max-height: 50vh; overflow: auto; border-radius: 6px; background: var(--comfy-input-bg, #222); }
.fal-spend table { width: 100%; border-collapse: collapse; font-size: 12px; }
.fal-spend th, .fal-spend td { text-align: left; padding: 4px 8px; white-space: nowrap; }
.fal-spend th { position: sticky; top: 0; background: var(--comfy-menu-bg, #333); font-weight: 600; }
.fal-spend tr + tr td { border-top: 1px solid rgba(255,255,255,.07); }
.fal-spend td.fal-usd, .fal-spend th.fal-usd { text-align: right; font-variant-numeric: tabular-nums; }
.fal-spend-total { font-weight: 600; }
.fal-spend-cached { opacity: .65; }
.fal-spend-compact { width: min(520px, 55vw); }
.fal-spend-compact .fal-spend-id { display: none; }
.fal-spend-compact .fal-spend-table { max-height: 40vh; }
.fal-overlay { position: fixed; inset: 0; z-index: 10000; background: rgba(0,0,0,.55); display: flex;
  align-items: center; justify-content: center; }
.fal-modal { background: var(--comfy-menu-bg, #2a2a2a); color: var(--fg-color, #ddd); padding: 14px 16px;
  border-radius: 10px; border: 1px solid var(--border-color, #555); box-shadow: 0 10px 40px rgba(0,0,0,.5); }
`;

// -- the pack's routes ----------------------------------------------------------------

/** One of the pack's routes (/fal/...) -> {ok, status, body}; status 0: no answer. */
async function falFetch(path, options = {}) {
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

/** JSON from one of the pack's routes; a failure throws one readable sentence. */
async function falRoute(path, options = {}, explain = errorLine) {
  const { ok, status, body } = await falFetch(path, options);
  if (!ok) throw new Error(explain(status, body));
  return body;
}

// -- the FalKey node's list follows the saved keys --------------------------------------

async function refreshKeyChoices(listing) {
  const values = keyChoices((listing?.keys ?? []).map((k) => k.name));
  // Nodes already on the canvas (both modes: the list is changed in place).
  for (const node of frontend.nodesOfType(KEY_NODE)) {
    frontend.setComboValues(frontend.findWidget(node, KEY_WIDGET), values);
  }
  frontend.redraw();
  // The node definition, so new fal Key nodes offer the new list.
  try {
    await frontend.refreshNodeDef(KEY_NODE);
  } catch (error) {
    console.warn(`[${EXTENSION}] could not refresh the fal Key node definition`, error);
  }
}

// -- the settings page ------------------------------------------------------------------

function keyPanel() {
  const list = el("div", { class: "fal-keys-list" });
  const message = el("div", { class: "fal-keys-msg" });
  const note = el("div", { class: "fal-keys-note" });
  const nameInput = el("input", { name: "name", placeholder: "name, e.g. work", maxlength: "40",
    autocomplete: "off", spellcheck: "false" });
  const keyInput = el("input", { name: "key", type: "password", placeholder: "fal key (id:secret)",
    autocomplete: "new-password", spellcheck: "false" });
  const addButton = el("button", { class: "fal-mini", type: "submit" }, "Add");
  let current = null;

  const say = (text, tone = "") => {
    message.className = `fal-keys-msg ${tone ? "fal-" + tone : ""}`;
    message.textContent = text;
  };

  function row(name, hint, { env = false } = {}) {
    const status = el("span", { class: "fal-keys-status" });
    const test = el("button", { class: "fal-mini", type: "button", title: "one cheap call to fal" }, "Test");
    test.addEventListener("click", async () => {
      test.disabled = true;
      say(`Testing ${env ? "FAL_KEY" : `'${name}'`}…`);
      try {
        const line = keyTestLine(await falRoute("/keys/test", { method: "POST", body: JSON.stringify({ name }) }));
        say(line.text, line.tone);
      } catch (error) {
        say(error.message, "bad");
      } finally {
        test.disabled = false;
      }
    });
    const buttons = [test];
    if (!env) {
      const remove = el("button", { class: "fal-mini", type: "button" }, "Delete");
      remove.addEventListener("click", async () => {
        if (!window.confirm(`Delete the fal key '${name}' from this ComfyUI server?`)) return;
        try {
          show(await falRoute(`/keys/${encodeURIComponent(name)}`, { method: "DELETE" }));
          say(`Deleted '${name}'.`, "ok");
        } catch (error) {
          say(error.message, "bad");
        }
      });
      buttons.push(remove);
    }
    return el("div", { class: "fal-keys-row", "data-name": name },
      el("span", { class: "fal-keys-name", title: name }, env ? "environment FAL_KEY" : name),
      el("span", { class: "fal-keys-hint", title: "last four characters" }, hint || "—"),
      status, el("span", { class: "fal-keys-buttons" }, ...buttons));
  }

  function show(listing, { refresh = true } = {}) {
    current = listing;
    list.replaceChildren();
    for (const key of listing.keys ?? []) list.append(row(key.name, key.hint));
    if (listing.env?.set) list.append(row(listing.env.choice, listing.env.hint, { env: true }));
    if (!list.children.length) {
      list.append(el("div", { class: "fal-keys-empty" }, "No fal key saved yet, and FAL_KEY is not set."));
    }
    note.textContent = `Keys stay on the ComfyUI server in a private file (not in ComfyUI's settings); ` +
      `workflows only carry a key's name. Test calls ${listing.target || "fal"}.`;
    if (refresh) refreshKeyChoices(listing);
  }

  const form = el("form", { class: "fal-keys-add", autocomplete: "off" }, nameInput, keyInput, addButton);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    event.stopPropagation();
    const name = nameInput.value.trim();
    const key = keyInput.value;
    if (current?.keys?.some((k) => k.name === name) &&
        !window.confirm(`Replace the saved fal key '${name}'?`)) return;
    addButton.disabled = true;
    try {
      const answer = await falRoute("/keys", { method: "POST", body: JSON.stringify({ name, key }) });
      keyInput.value = "";
      nameInput.value = "";
      show(answer);
      const saved = answer.keys.find((k) => k.name === answer.added);
      say(`${answer.replaced ? "Replaced" : "Saved"} '${answer.added}' (${saved?.hint ?? "…"}); ` +
        `pick it in a fal Key node.`, "ok");
      loadPrices();   // a first key lets the server fetch fal's price list
    } catch (error) {
      say(error.message, "bad");
    } finally {
      addButton.disabled = false;
    }
  });
  // ComfyUI's keybindings must not see typing in these inputs.
  for (const input of [nameInput, keyInput]) input.addEventListener("keydown", (e) => e.stopPropagation());

  falRoute("/keys").then((listing) => show(listing, { refresh: false }), (error) => say(error.message, "bad"));
  return el("div", { class: "fal-keys" }, list, form, message, note);
}

// -- the node's panel: results after a run; the node makes room for it --------------------
// While a node runs, its status is ComfyUI's own progress text (both front ends show it in
// the node); once it ran, the panel shows the final status with the URLs and request ids,
// and the progress text is removed, so the status is in one place at a time.

/** Grow `node` to hold its widgets (they keep their size) and move the nodes it would cover. */
function fitNode(node) {
  const wanted = node.computeSize?.()?.[1];
  // What the node's widgets had beyond their minimum before the run (a prompt box the
  // user made taller) is kept: the node grows by what was added.
  const [baseHeight, baseMinimum] = node.falBase ?? [0, 0];
  const target = Math.max(wanted ?? 0, baseHeight + ((wanted ?? 0) - baseMinimum));
  if (wanted && node.size[1] < target) node.setSize([node.size[0], target]);
  frontend.redraw(node);
  // Nodes 2.0 sizes a node from its content at the next layout: measure after it.
  setTimeout(() => makeRoom(node), frontend.isVueMode() ? 150 : 0);
}

function makeRoom(node) {
  const graph = frontend.graphOf(node);
  const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const shown = { id: node.id, pos: node.pos, size: frontend.shownSize(node) };
  const moves = makeRoomMoves(shown, frontend.nodesOf(graph), { titleHeight });
  for (const { node: other, dy } of moves) other.pos = [other.pos[0], other.pos[1] + dy];
  if (moves.length) frontend.redraw();
}

function resultPanel(node) {
  let widget = frontend.findWidget(node, "fal_result");
  if (widget) return widget;
  const box = el("div", { class: "fal-result" });
  const height = () => resultPanelHeight(box.childElementCount);
  widget = frontend.addDomWidget(node, "fal_result", "fal_result", box, {
    getMinHeight: height,
    getMaxHeight: height,
    getHeight: height,
  });
  widget.falBox = box;
  return widget;
}

function showResult(node, output) {
  const view = resultView(output);
  if (!view) return;
  const widget = resultPanel(node);
  const lines = [el("div", { class: "fal-result-line" }, el("span", { title: view.summary }, view.summary),
    view.urls.length > 1 ? copyButton(view.copyText, "copy every URL, one a line") : null)];
  view.urls.forEach((entry, i) => {
    const link = entry.inline
      ? el("span", { title: "inline result: fal keeps no copy" }, `${i + 1}. ${entry.label}`)
      : el("a", { href: entry.url, target: "_blank", rel: "noopener noreferrer", title: entry.url },
        `${i + 1}. ${entry.label}`);
    lines.push(el("div", { class: "fal-result-line" }, link, copyButton(entry.url, "copy this URL")));
  });
  for (const id of view.requestIds) {
    lines.push(el("div", { class: "fal-result-line" },
      el("span", { class: "fal-result-id", title: "fal request id" }, `request ${id}`), copyButton(id, "copy the request id")));
  }
  widget.falBox.replaceChildren(...lines);
  widget.falBox.style.height = `${resultPanelHeight(lines.length)}px`;
  // The panel now carries the final status: ComfyUI's progress text would repeat it.
  frontend.removeProgressText(node);
  fitNode(node);
}

function clearResult(node) {
  const widget = frontend.findWidget(node, "fal_result");
  if (!widget?.falBox) return;
  widget.falBox.replaceChildren();
  widget.falBox.style.height = "0px";
}

// -- Recraft colour swatches -----------------------------------------------------------------

function addSwatches(node) {
  const text = frontend.findWidget(node, COLORS_WIDGET);
  if (!text) return;
  const box = el("div", { class: "fal-swatches" });
  let shown = null;

  const setText = (value) => {
    text.value = value;     // the watcher below redraws the swatches
    text.callback?.(value, frontend.canvas(), node);
    frontend.redraw(node);
    frontend.graphChanged();
  };

  function render() {
    shown = String(text.value ?? "");
    const swatches = parseColors(shown).map((entry, i) => {
      const swatch = el("span", {
        class: entry.hex ? "fal-swatch" : "fal-swatch fal-swatch-bad",
        title: entry.hex ? `${entry.text}: click to remove` : `'${entry.text}' is not a colour: click to remove`,
        style: entry.hex ? { background: entry.hex, color: labelColor(entry.hex) } : {},
      }, entry.hex ? "" : "?");
      swatch.addEventListener("click", (event) => {
        event.stopPropagation();
        setText(removeColor(shown, i));
      });
      return swatch;
    });
    const picker = el("input", { type: "color", value: swatches.length ? (parseColors(shown).at(-1).hex ?? "#ff8800") : "#ff8800",
      title: "add a colour" });
    picker.addEventListener("change", () => setText(addColor(String(text.value ?? ""), picker.value)));
    const add = el("span", { class: "fal-swatch fal-swatch-add", title: "add a colour" }, "+", picker);
    box.replaceChildren(el("span", { class: "fal-swatches-label" }, "colours"), ...swatches, add);
  }

  frontend.addDomWidget(node, "colors_swatches", "fal_swatches", box, {
    getMinHeight: () => 32,
    getMaxHeight: () => 80,
  });

  // Follow the text however it changes: typing, paste, undo, loading a workflow (never
  // from canvas drawing, which Nodes 2.0 does not call).
  frontend.watchWidget(node, text, () => {
    if (String(text.value ?? "") !== shown) render();
  });
}


// -- prices on fal nodes ------------------------------------------------------------------

// GET /fal/prices: {prices: {endpoint_id: {unit_price, unit, source}}, fresh, fallback_date,
// refreshing, nodes: {node type: {endpoint_id, title, multi}}}.
const priceState = { answer: null, polls: 0, timer: null };

async function loadPrices() {
  try {
    priceState.answer = await falRoute("/prices");
  } catch (error) {
    console.warn(`[${EXTENSION}] could not load fal prices`, error);
    return;
  }
  frontend.redraw();
  // The server fetches fal's price list in the background; ask again once it had time.
  clearTimeout(priceState.timer);
  if (priceState.answer?.refreshing && priceState.polls < 10) {
    priceState.polls += 1;
    priceState.timer = setTimeout(loadPrices, 3000);
  } else {
    priceState.polls = 0;
  }
}

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

/** What the node will ask fal for right now: [price, options] for lib/price.js, or null. */
function pricingFor(node) {
  // The ten nodes have a fixed endpoint; fal Image Endpoint's is its `endpoint` widget.
  const info = nodePriceInfo(priceState.answer, node.type, (name) => widgetValue(node, name));
  if (!info) return null;
  const { price } = info;
  const last = node.falLastRun;
  return [price, {
    // Before a run the front end can't know an upstream batch: 1 request per input image.
    images: info.multi ? 1 : (last?.items ?? 1),
    multi: info.multi,
    // The price rules (num_images, Recraft's vector styles, ...) read the widget values.
    // (fal Image Endpoint: the fields of its `arguments` JSON.)
    inputs: info.inputs ?? Object.fromEntries((node.widgets ?? []).map((w) => [w.name, w.value])),
    megapixels: last?.megapixels ?? null,
    learned: info.learned,
  }];
}

// Drawn like the front end's own node badges (LGraphBadge is not exported to extensions);
// Nodes 2.0 reads text and colours from the same object for its chips.
class FalBadge {
  constructor(text, bgColor, fgColor = "#ffffff") {
    Object.assign(this, { text, bgColor, fgColor, fontSize: 12, padding: 6, height: 20, cornerRadius: 5 });
  }

  get visible() {
    return Boolean(this.text);
  }

  getWidth(ctx) {
    if (!this.visible) return 0;
    const font = ctx.font;
    ctx.font = `${this.fontSize}px sans-serif`;
    const width = ctx.measureText(this.text).width + this.padding * 2;
    ctx.font = font;
    return width;
  }

  draw(ctx, x, y) {
    if (!this.visible) return;
    const { font, fillStyle, textBaseline, textAlign } = ctx;
    const width = this.getWidth(ctx);
    ctx.font = `${this.fontSize}px sans-serif`;
    ctx.fillStyle = this.bgColor;
    ctx.beginPath();
    if (ctx.roundRect) ctx.roundRect(x, y, width, this.height, this.cornerRadius);
    else ctx.rect(x, y, width, this.height);
    ctx.fill();
    ctx.fillStyle = this.fgColor;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.fillText(this.text, x + this.padding, y + this.height / 2 + 1);
    Object.assign(ctx, { font, fillStyle, textBaseline, textAlign });
  }
}

const BADGE_EXACT = "#2e6140";
const BADGE_ESTIMATE = "#7a5a1e";
const BADGE_UNKNOWN = "#555555";

/** One short chip: "≈ $0.08" before a run, "≈ $0.08 · last $0.05" after one. The
 * details (images × unit price, why it is an estimate) are in the node's panel and
 * the spend view. */
function addPriceBadge(node) {
  frontend.addBadge(node, () => {
    const pricing = pricingFor(node);
    if (!pricing) return new FalBadge("", BADGE_UNKNOWN);
    const run = estimateRun(...pricing);
    const color = !run.known ? BADGE_UNKNOWN : formatPriceBadge(...pricing).estimate ? BADGE_ESTIMATE : BADGE_EXACT;
    return new FalBadge(priceChip(run, node.falLastRun), color);
  });
}

// -- the spend view ----------------------------------------------------------------------

function spendPanel({ onClose, compact = false } = {}) {
  const table = el("div", { class: "fal-spend-table" });
  const total = el("div", { class: "fal-spend-total" });
  const source = el("div", { class: "fal-keys-note" });
  const message = el("div", { class: "fal-keys-msg" });
  let report = "";

  async function refresh() {
    try {
      const body = await falRoute("/spend");
      const view = spendView(body);
      report = body.report ?? "";
      const rows = view.rows.map((r) => el("tr", { class: r.cached ? "fal-spend-cached" : "" },
        el("td", {}, r.time), el("td", { title: r.endpoint }, r.title),
        el("td", { class: "fal-result-id fal-spend-id" }, r.requestId || "—"), el("td", {}, r.state),
        el("td", { class: "fal-usd" }, r.usd), el("td", { class: "fal-usd" }, r.billed)));
      table.replaceChildren(rows.length ? el("table", {},
        el("tr", {}, el("th", {}, "time"), el("th", {}, "node"), el("th", { class: "fal-spend-id" }, "fal request id"),
          el("th", {}, ""), el("th", { class: "fal-usd" }, "estimate"), el("th", { class: "fal-usd" }, "billed by fal")),
        ...rows) : []);
      total.textContent = view.totalLine;
      message.textContent = "";
    } catch (error) {
      message.className = "fal-keys-msg fal-bad";
      message.textContent = error.message;
    }
    source.textContent = `${priceSourceLine(priceState.answer)} "billed by fal" is fal's bill for a request ` +
      "(its billable units × the unit price); \"estimate\" where fal sent none.";
  }

  const refreshButton = el("button", { class: "fal-mini", type: "button" }, "Refresh");
  refreshButton.addEventListener("click", refresh);
  const copy = el("button", { class: "fal-mini", type: "button", title: "copy the report as text" }, "Copy");
  copy.addEventListener("click", async () => {
    copy.textContent = (await copyText(report)) ? "copied" : "failed";
    setTimeout(() => (copy.textContent = "Copy"), 1200);
  });
  const head = el("div", { class: "fal-spend-head" }, el("h3", {}, "fal spend this session"),
    refreshButton, copy, onClose ? el("button", { class: "fal-mini", type: "button", onclick: onClose }, "Close") : null);
  const panel = el("div", { class: compact ? "fal-spend fal-spend-compact" : "fal-spend" },
    head, table, total, source, message);
  // Follow new runs while the panel is open.
  const stop = frontend.onExecuted(() => (panel.isConnected ? refresh() : stop()));
  refresh();
  return panel;
}

function openSpendDialog() {
  document.querySelector(".fal-overlay")?.remove();
  const overlay = el("div", { class: "fal-overlay" });
  const close = () => {
    overlay.remove();
    document.removeEventListener("keydown", onKey, true);
  };
  const onKey = (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    }
  };
  overlay.addEventListener("click", (event) => event.target === overlay && close());
  document.addEventListener("keydown", onKey, true);
  overlay.append(el("div", { class: "fal-modal", role: "dialog", "aria-label": "fal spend this session" },
    spendPanel({ onClose: close })));
  document.body.append(overlay);
  return overlay;
}

// -- the owner's server settings --------------------------------------------------------

function serverSettingsPanel() {
  const message = el("div", { class: "fal-keys-msg" });
  const body = el("div", { class: "fal-server-body" });
  let saved = null;

  const say = (text, tone = "") => {
    message.className = `fal-keys-msg ${tone ? "fal-" + tone : ""}`;
    message.textContent = text;
  };

  async function save(changes, done) {
    if (!Object.keys(changes).length) return;
    try {
      show(await falRoute("/server-settings", { method: "POST", body: JSON.stringify(changes) },
        serverSettingsError));
      say(done, "ok");
    } catch (error) {
      say(error.message, "bad");
    }
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
    input.addEventListener("keydown", (e) => e.stopPropagation());
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
      el("h4", {}, "Servers a workflow may send your key to"),
      el("div", { class: "fal-keys-note" }, "A fal Settings node's base_url must be one of these " +
        "(fal's own hosts always work). Workflows from others cannot add to this list."),
      ...(rows.length ? rows : [el("div", { class: "fal-keys-empty" }, "None: only fal's own hosts.")]),
      form,
    ];
  }

  function proxyRow() {
    if (!("proxy_url" in saved)) return [];
    const input = el("input", { name: "proxy_url", placeholder: "none", spellcheck: "false", style: { flex: "1" } });
    input.value = saved.proxy_url ?? "";
    input.addEventListener("keydown", (e) => e.stopPropagation());
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
      input.addEventListener("keydown", (e) => e.stopPropagation());
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
    body.replaceChildren(...serverList(), ...proxyRow(), el("h4", {}, "Limits"), ...numberRows(),
      Number.isFinite(spent) ? el("div", { class: "fal-keys-note" }, `Spent today: ≈ $${spent.toFixed(2)}.`) : null);
  }

  falRoute("/server-settings", {}, serverSettingsError).then(show, (error) => say(error.message, "bad"));
  return el("div", { class: "fal-server" }, body, message);
}

// -- registration ----------------------------------------------------------------------

function isFalEndpoint(nodeData) {
  return String(nodeData?.category ?? "").startsWith(FAL_CATEGORY) &&
    (nodeData.output_name ?? []).includes("urls");
}

/** Run `extra` after a node method (ComfyUI's or another extension's); a failure in
 * `extra` is logged, never thrown into the graph. */
function extendMethod(proto, name, extra, failure) {
  const original = proto[name];
  proto[name] = function (...args) {
    const result = original?.apply(this, args);
    try {
      extra.apply(this, args);
    } catch (error) {
      console.warn(`[${EXTENSION}] ${failure}`, error);
    }
    return result;
  };
}

frontend.registerExtension({
  name: `${EXTENSION}.fal`,

  settings: [
    {
      id: "fal.Keys",
      category: ["fal", "Keys", "Saved keys"],
      name: "fal keys on this server",
      tooltip: "Add a named fal key, test it, delete it. The key is kept on the ComfyUI server in a " +
        "private file, never in ComfyUI's settings; workflows carry only its name.",
      type: () => keyPanel(),
      defaultValue: "",
    },
    {
      id: "fal.Spend",
      category: ["fal", "Spend", "This session"],
      name: "fal calls this session",
      tooltip: "Every fal call since ComfyUI started: billed or answered from the cache, with its " +
        "estimated cost. The fal Spend node gives the same report as text.",
      type: () => spendPanel({ compact: true }),
      defaultValue: "",
    },
    {
      id: "fal.ServerSettings",
      category: ["fal", "Server", "Owner settings"],
      name: "What workflows on this server may do",
      tooltip: "Decided here, on the server: which servers may receive your fal key and how much " +
        "fal may cost. No workflow can raise these.",
      type: () => serverSettingsPanel(),
      defaultValue: "",
    },
  ],

  commands: [
    {
      id: "fal.ManageKeys",
      label: "fal: manage keys",
      icon: "pi pi-key",
      function: async () => {
        if (await frontend.openSettings("fal", { ready: ".fal-keys" })) return;
        frontend.notify("warn", "The fal settings page could not be opened",
          "Open ComfyUI's settings (the gear) and pick \"fal\" to manage your fal keys.");
      },
    },
    {
      id: "fal.Spend",
      label: "fal: spend this session",
      icon: "pi pi-dollar",
      function: () => {
        openSpendDialog();
      },
    },
  ],

  menuCommands: [{ path: ["Extensions", "fal"], commands: ["fal.ManageKeys", "fal.Spend"] }],

  async setup() {
    document.head.append(el("style", { id: "comfyui-fal-edit-style" }, STYLE));
    frontend.onExecuting((id) => {
      if (id === null) return;
      const node = frontend.getNodeById(id);
      if (!node?.falEndpoint) return;
      clearResult(node);
      node.falBase = [node.size[1], node.computeSize?.()?.[1] ?? node.size[1]];
    });
    // ComfyUI adds its progress text to the node: grow it so the other widgets keep their
    // size (after the front end's own handler has added the text).
    frontend.onProgressText((id) => {
      const node = frontend.getNodeById(id);
      if (node?.falEndpoint) setTimeout(() => fitNode(node), 0);
    });
    loadPrices();
    // endpoint_form.js: fal Image Endpoint's endpoint changed and its price was asked for.
    window.addEventListener("fal:prices-changed", () => loadPrices());
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const proto = nodeType.prototype;
    if (nodeData?.name === RECRAFT_NODE) {
      extendMethod(proto, "onNodeCreated", function () {
        addSwatches(this);
      }, "colour swatches unavailable");
    }
    if (isFalEndpoint(nodeData)) {
      proto.falEndpoint = true;
      extendMethod(proto, "onExecuted", function (output) {
        showResult(this, output);
        // The real number of requests and the run's cost (cached requests: $0).
        const last = lastRunFromOutput(output, { numImages: widgetValue(this, "num_images") ?? 1 });
        if (last) this.falLastRun = last;
        // fal's bill teaches the server what a per-second (or vague) unit costs: fetch it.
        if (last?.billed !== null && last?.billed !== undefined) loadPrices();
        frontend.redraw(this);
      }, "could not show the result");
      extendMethod(proto, "onNodeCreated", function () {
        addPriceBadge(this);
      }, "price badge unavailable");
      extendMethod(proto, "onNodeCreated", function () {
        // A new fal node starts with its seed fixed: the same inputs then cost nothing
        // the second time (result cache), and a rerun after a partial failure pays only
        // for the failed items. A loaded workflow's own choice is applied after this.
        const control = this.widgets?.find((w) => w.name === "control_after_generate");
        if (control) control.value = "fixed";
      }, "could not fix the seed");
    }
  },
});
