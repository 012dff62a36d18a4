// comfyui-fal-edit front end:
//  - a "fal" page in ComfyUI's settings: add a named fal key, see saved keys by name and
//    last four characters, test one against fal, delete one (routes in nodes/routes.py);
//  - the fal Key node's list follows those changes without reloading the page;
//  - after a fal node ran: its result URLs (copyable) and fal request ids on the node;
//  - the Recraft node's `colors` text gets swatches and a colour picker;
//  - every fal node shows its price before it runs (a badge above its title, following
//    num_images and, after a run, the real number of requests) and its last run's cost;
//  - "fal: spend this session" (command, menu, and a section of the fal settings page)
//    lists this session's fal calls from GET /fal/spend.
// Keys never pass through ComfyUI's settings store: the panel has no setting value.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { addColor, labelColor, parseColors, removeColor } from "./lib/colors.js";
import { errorLine, keyChoices, keyLabel, keyTestLine, resultView } from "./lib/format.js";
import { formatLastRun, formatPriceBadge, lastRunFromOutput, priceSourceLine, spendView } from "./lib/price.js";

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
.fal-result { font-size: 11px; line-height: 1.5; overflow: auto; padding: 2px 4px; color: var(--fg-color, #ddd); }
.fal-result a { color: #7fb4ff; text-decoration: none; }
.fal-result-line { display: flex; gap: 6px; align-items: center; white-space: nowrap; }
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
.fal-spend { display: flex; flex-direction: column; gap: 8px; width: min(760px, 80vw); font-size: 13px; }
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

/** JSON from one of the pack's routes (/fal/...); a failure throws one readable sentence. */
async function falRoute(path, options = {}) {
  let response;
  try {
    response = await api.fetchApi(`/fal${path}`, {
      ...options,
      headers: { "Content-Type": "application/json", ...(options.headers ?? {}) },
      cache: "no-store",
    });
  } catch {
    throw new Error(errorLine(0, null));
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new Error(errorLine(response.status, body));
  return body;
}

// -- the FalKey node's list follows the saved keys --------------------------------------

function allGraphs() {
  const graphs = [app.graph];
  const subgraphs = app.graph?.subgraphs;
  if (subgraphs?.values) graphs.push(...subgraphs.values());
  return graphs.filter(Boolean);
}

async function refreshKeyChoices(listing) {
  const values = keyChoices((listing?.keys ?? []).map((k) => k.name));
  // The node definition, so new fal Key nodes offer the new list.
  try {
    const defs = await (await api.fetchApi(`/object_info/${KEY_NODE}`, { cache: "no-store" })).json();
    if (defs?.[KEY_NODE] && typeof app.registerNodeDef === "function") {
      await app.registerNodeDef(KEY_NODE, defs[KEY_NODE]);
    }
  } catch (error) {
    console.warn(`[${EXTENSION}] could not refresh the fal Key node definition`, error);
  }
  // Nodes already on the canvas.
  for (const graph of allGraphs()) {
    for (const node of graph._nodes ?? graph.nodes ?? []) {
      if (node.type !== KEY_NODE) continue;
      const widget = node.widgets?.find((w) => w.name === KEY_WIDGET);
      if (widget?.options) widget.options.values = values;
    }
  }
  app.graph?.setDirtyCanvas?.(true, true);
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

// -- the result panel on fal nodes ---------------------------------------------------------

function resultPanel(node) {
  let widget = node.widgets?.find((w) => w.name === "fal_result");
  if (widget) return widget;
  const box = el("div", { class: "fal-result" });
  widget = node.addDOMWidget("fal_result", "fal_result", box, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => (box.childElementCount ? Math.min(28 + 18 * box.childElementCount, 220) : 0),
    getMaxHeight: () => 260,
  });
  widget.serialize = false;   // not part of widgets_values: workflows stay loadable without us
  widget.falBox = box;
  return widget;
}

function showResult(node, output) {
  const view = resultView(output);
  if (!view) return;
  const widget = resultPanel(node);
  const lines = [el("div", { class: "fal-result-line" }, el("span", {}, view.summary),
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
  const wanted = node.computeSize?.();
  if (wanted && node.size[1] < wanted[1]) node.setSize([node.size[0], wanted[1]]);
  node.setDirtyCanvas?.(true, true);
}

function clearResult(node) {
  const widget = node.widgets?.find((w) => w.name === "fal_result");
  if (widget?.falBox) widget.falBox.replaceChildren();
}

// -- Recraft colour swatches -----------------------------------------------------------------

function addSwatches(node) {
  const text = node.widgets?.find((w) => w.name === COLORS_WIDGET);
  if (!text) return;
  const box = el("div", { class: "fal-swatches" });
  let shown = null;

  const setText = (value) => {
    text.value = value;
    text.callback?.(value, app.canvas, node);
    render();
    node.setDirtyCanvas?.(true, true);
    app.graph?.change?.();
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

  const widget = node.addDOMWidget("colors_swatches", "fal_swatches", box, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => 32,
    getMaxHeight: () => 80,
  });
  widget.serialize = false;

  // Follow the text however it changes: typing, undo, loading a workflow.
  const callback = text.callback;
  text.callback = function (...args) {
    const result = callback?.apply(this, args);
    if (String(text.value ?? "") !== shown) render();
    return result;
  };
  const onDraw = node.onDrawForeground;
  node.onDrawForeground = function (...args) {
    if (String(text.value ?? "") !== shown) render();
    return onDraw?.apply(this, args);
  };
  render();
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
  app.graph?.setDirtyCanvas?.(true, true);
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

/** The node's badge text right now: price × what it will ask for. */
function priceBadgeFor(node) {
  const answer = priceState.answer;
  const info = answer?.nodes?.[node.type];
  if (!answer || !info) return null;
  const row = answer.prices?.[info.endpoint_id];
  const price = row ? { unitPrice: row.unit_price, unit: row.unit, source: row.source, rules: row.rules } : null;
  const last = node.falLastRun;
  return formatPriceBadge(price, {
    // Before a run the front end can't know an upstream batch: 1 request per input image.
    images: info.multi ? 1 : (last?.items ?? 1),
    multi: info.multi,
    // The price rules (num_images, Recraft's vector styles, ...) read the widget values.
    inputs: Object.fromEntries((node.widgets ?? []).map((w) => [w.name, w.value])),
    megapixels: last?.megapixels ?? null,
  });
}

// Drawn like the front end's own node badges (LGraphBadge is not exported to extensions).
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
const BADGE_LAST = "#3b4a63";

function addPriceBadges(node) {
  if (!Array.isArray(node.badges)) return;       // an older front end without node badges
  node.badges.push(() => {
    const badge = priceBadgeFor(node);
    if (!badge) return new FalBadge("", BADGE_UNKNOWN);
    const color = badge.text === "price unknown" ? BADGE_UNKNOWN : badge.estimate ? BADGE_ESTIMATE : BADGE_EXACT;
    return new FalBadge(badge.text, color);
  });
  node.badges.push(() => new FalBadge(node.falLastRun ? formatLastRun(node.falLastRun) : "", BADGE_LAST));
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
      const rows = view.rows.map((r) => el("tr", { class: r.state === "billed" ? "" : "fal-spend-cached" },
        el("td", {}, r.time), el("td", { title: r.endpoint }, r.title),
        el("td", { class: "fal-result-id fal-spend-id" }, r.requestId || "—"), el("td", {}, r.state),
        el("td", { class: "fal-usd" }, r.usd)));
      table.replaceChildren(rows.length ? el("table", {},
        el("tr", {}, el("th", {}, "time"), el("th", {}, "node"), el("th", { class: "fal-spend-id" }, "fal request id"),
          el("th", {}, ""), el("th", { class: "fal-usd" }, "estimate")), ...rows) : []);
      total.textContent = view.totalLine;
      message.textContent = "";
    } catch (error) {
      message.className = "fal-keys-msg fal-bad";
      message.textContent = error.message;
    }
    source.textContent = `${priceSourceLine(priceState.answer)} Your fal dashboard shows what fal billed.`;
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
  const onRun = () => panel.isConnected ? refresh() : api.removeEventListener("executed", onRun);
  api.addEventListener("executed", onRun);
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

app.registerExtension({
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
  ],

  commands: [
    {
      id: "fal.ManageKeys",
      label: "fal: manage keys",
      icon: "pi pi-key",
      function: async () => {
        app.extensionManager?.dialog?.showSettingsDialog?.("fal");
        // Select the fal page when the dialog opened on another one.
        for (let i = 0; i < 20 && !document.querySelector(".fal-keys"); i++) {
          const item = [...document.querySelectorAll(".p-dialog [role=option], .p-dialog li")]
            .find((e) => e.textContent.trim() === "fal");
          item?.click();
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
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
    api.addEventListener("executing", ({ detail }) => {
      const id = detail?.node ?? detail;
      if (id === null || id === undefined) return;
      const node = app.graph?.getNodeById?.(id);
      if (node && node.falEndpoint) clearResult(node);
    });
    loadPrices();
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
        this.setDirtyCanvas?.(true, true);
      }, "could not show the result");
      extendMethod(proto, "onNodeCreated", function () {
        addPriceBadges(this);
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
