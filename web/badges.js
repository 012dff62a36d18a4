// Every fal node shows one short chip: its price before it runs (following num_images and
// the other price rules, and after a run the real number of requests) and its last run's
// cost. The text comes from lib/badges.js and lib/price.js; prices from GET /fal/prices.
import { priceChip, unknownReason } from "./lib/badges.js";
import { estimateRun, formatPriceBadge, lastRunFromOutput, nodePriceInfo } from "./lib/price.js";

const BADGE_EXACT = "#2e6140";
const BADGE_ESTIMATE = "#7a5a1e";
const BADGE_UNKNOWN = "#555555";
const POLL_MS = 3000;
const MAX_POLLS = 10;

// Drawn like the front end's own node badges (LGraphBadge is not exported to extensions);
// Nodes 2.0 reads text and colours from the same object for its chips.
export class FalBadge {
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

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

/**
 * The price badges. routes: web/routes.js. The answer of GET /fal/prices is kept here
 * (answer()) for the spend view's "where prices come from" line.
 */
export function createPriceBadges({ frontend, routes }) {
  // GET /fal/prices: {prices: {endpoint_id: {unit_price, unit, source}}, fresh, fallback_date,
  // refreshing, can_ask_fal, not_listed, nodes: {node type: {endpoint_id, title, multi}}}.
  const state = { answer: null, polls: 0, timer: null };

  /** What the node will ask fal for right now: [price, options] for lib/price.js, or null. */
  function pricingFor(node) {
    // The ten nodes have a fixed endpoint; fal Image Endpoint's is its `endpoint` widget.
    const info = nodePriceInfo(state.answer, node.type, (name) => widgetValue(node, name));
    if (!info) return null;
    const last = node.falLastRun;
    return [info.price, {
      // Before a run the front end can't know an upstream batch: 1 request per input image.
      images: info.multi ? 1 : (last?.items ?? 1),
      multi: info.multi,
      // The price rules (num_images, Recraft's vector styles, ...) read the widget values.
      // (fal Image Endpoint: the fields of its `arguments` JSON.)
      inputs: info.inputs ?? Object.fromEntries((node.widgets ?? []).map((w) => [w.name, w.value])),
      megapixels: last?.megapixels ?? null,
      learned: info.learned,   // what fal billed for these inputs (per-second and vague units)
    }, info.endpointId];
  }

  /** The node's chip now. */
  function badgeFor(node) {
    const pricing = pricingFor(node);
    if (!pricing) return new FalBadge("", BADGE_UNKNOWN);
    const [price, options, endpointId] = pricing;
    const run = estimateRun(price, options);
    const color = !run.known ? BADGE_UNKNOWN : formatPriceBadge(price, options).estimate ? BADGE_ESTIMATE : BADGE_EXACT;
    return new FalBadge(priceChip(run, node.falLastRun, unknownReason(state.answer, endpointId)), color);
  }

  /** Every fal node's chip is shown again (Nodes 2.0 does not redraw chips by itself). */
  function refreshAll() {
    frontend.refreshBadges();
  }

  async function load() {
    try {
      state.answer = await routes.route("/prices");
    } catch (error) {
      console.warn("[comfyui-fal-edit] could not load fal prices", error);
      return;
    }
    refreshAll();
    // The server fetches fal's price list in the background; ask again once it had time.
    clearTimeout(state.timer);
    if (state.answer?.refreshing && state.polls < MAX_POLLS) {
      state.polls += 1;
      state.timer = setTimeout(load, POLL_MS);
    } else {
      state.polls = 0;
    }
  }

  /** One chip on a new fal node: "≈ $0.08" before a run, "≈ $0.08 · last $0.05" after one. */
  function addPriceBadge(node) {
    frontend.addBadge(node, () => {
      frontend.badgeVersion();   // Nodes 2.0: its chip is computed again when this changes
      return badgeFor(node);
    });
    // The price rules read the widgets (num_images, style, arguments): follow their edits.
    for (const widget of node.widgets ?? []) {
      const callback = widget.callback;
      widget.callback = function (...args) {
        const result = callback?.apply(this, args);
        frontend.refreshBadges(node);
        return result;
      };
    }
  }

  /** After a run: the real number of requests and its cost (cached requests: $0). */
  function noteRun(node, output) {
    const last = lastRunFromOutput(output, { numImages: widgetValue(node, "num_images") ?? 1 });
    if (last) node.falLastRun = last;
    // fal's bill teaches the server what a per-second (or vague) unit costs: fetch it.
    if (last?.billed !== null && last?.billed !== undefined) load();
    frontend.refreshBadges(node);
  }

  return { load, addPriceBadge, noteRun, badgeFor, refreshAll, answer: () => state.answer };
}
