import { test } from "node:test";
import assert from "node:assert/strict";
import {
  applyPriceRules, estimateRun, formatClock, formatLastRun, formatPriceBadge, formatUsd, lastRunFromOutput,
  priceSourceLine, spendView,
} from "../lib/price.js";

const falImage = { unitPrice: 0.04, unit: "image", source: "fal" };

test("dollars", () => {
  assert.equal(formatUsd(0.08), "$0.08");
  assert.equal(formatUsd(0.025), "$0.025");
  assert.equal(formatUsd(0.002), "$0.002");
  assert.equal(formatUsd(0.0005), "$0.0005");
  assert.equal(formatUsd(0.1), "$0.10");
  assert.equal(formatUsd(1.5), "$1.50");
  assert.equal(formatUsd(0), "$0");
  assert.equal(formatUsd(undefined), "$0");
  assert.equal(formatUsd(0.04 * 3), "$0.12");
});

test("per image, from fal: exact", () => {
  const badge = formatPriceBadge(falImage, { images: 1, numImages: 1 });
  assert.deepEqual([badge.text, badge.estimate], ["≈ $0.04 · 1 image × $0.04", false]);
  assert.equal(formatPriceBadge(falImage, { images: 2 }).text, "≈ $0.08 · 2 images × $0.04");
  // The route's own field names work too.
  assert.equal(formatPriceBadge({ unit_price: 0.05, unit: "image", source: "fal" }).text,
    "≈ $0.05 · 1 image × $0.05");
});

test("num_images multiplies the images fal makes per request", () => {
  assert.equal(formatPriceBadge(falImage, { images: 1, numImages: 3 }).text, "≈ $0.12 · 3 images × $0.04");
  assert.equal(formatPriceBadge(falImage, { images: 2, numImages: 4 }).text, "≈ $0.32 · 8 images × $0.04");
  // Nonsense widget values count as 1.
  assert.equal(formatPriceBadge(falImage, { images: 0, numImages: "x" }).text, "≈ $0.04 · 1 image × $0.04");
});

test("per megapixel is an estimate; 1 MP per image until the node ran", () => {
  const flux = { unitPrice: 0.03, unit: "megapixel", source: "fal" };
  const before = formatPriceBadge(flux, { images: 1, numImages: 2 });
  assert.equal(before.text, "≈ $0.06 · 2 MP × $0.03/MP · estimate");
  assert.equal(before.estimate, true);
  assert.match(before.title, /1 MP per image assumed/);
  // fal bills each image's megapixels rounded up: 1.5 MP is billed as 2.
  const after = formatPriceBadge(flux, { images: 2, numImages: 1, megapixels: 1.5 });
  assert.equal(after.text, "≈ $0.12 · 4 MP × $0.03/MP · estimate");
  assert.match(after.title, /last run/);
});

test("the shipped fallback table is an estimate", () => {
  const badge = formatPriceBadge({ unitPrice: 0.04, unit: "image", source: "fallback" }, { images: 1 });
  assert.equal(badge.text, "≈ $0.04 · 1 image × $0.04 · estimate");
  assert.equal(badge.estimate, true);
  assert.match(badge.title, /shipped with the pack/);
  assert.equal(formatPriceBadge({ unitPrice: 0.001, unit: "image", source: "fallback" }).text,
    "≈ $0.001 · 1 image × $0.001 · estimate");
});

test("unknown price or unit", () => {
  assert.deepEqual(formatPriceBadge(null), {
    text: "price unknown", estimate: true, title: "fal's price list has no price for this endpoint." });
  assert.equal(formatPriceBadge(undefined, { images: 3 }).text, "price unknown");
  assert.equal(formatPriceBadge({ unitPrice: "n/a", unit: "image", source: "fal" }).text, "price unknown");
  // Per second or in a vague unit: no made-up dollar figure before a run.
  const perSecond = formatPriceBadge({ unitPrice: 0.01, unit: "second", source: "fal" }, { images: 2 });
  assert.equal(perSecond.text, "price varies");
  assert.equal(perSecond.estimate, true);
  assert.match(perSecond.title, /fal bills \$0.01 per second, which can't be counted before a run/);
  assert.equal(estimateRun({ unitPrice: 0.01, unit: "second", source: "fal" }).total, null);
  assert.equal(formatPriceBadge({ unitPrice: 0.2, unit: "units", source: "fal" }).text, "price varies");
});

test("after a run, what fal billed for these inputs, marked as such", () => {
  const perSecond = { unitPrice: 0.0009, unit: "second", source: "fal" };
  const learned = [{ inputs: { upscale_factor: 4 }, usd: 0.0027 }];
  const same = formatPriceBadge(perSecond, { images: 2, inputs: { upscale_factor: 4, seed: 7 }, learned });
  assert.equal(same.text, "$0.0054 last billed");
  assert.match(same.title, /fal billed \$0.0027 for one request with these inputs last time/);
  // Other inputs: not learned yet.
  assert.equal(formatPriceBadge(perSecond, { inputs: { upscale_factor: 2 }, learned }).text, "price varies");
});

test("Kontext multi: all images are one request", () => {
  const kontext = { unitPrice: 0.08, unit: "image", source: "fal" };
  assert.equal(formatPriceBadge(kontext, { images: 4, multi: true, numImages: 1 }).text,
    "≈ $0.08 · 1 image × $0.08");
  assert.equal(formatPriceBadge(kontext, { images: 3, multi: true, numImages: 2 }).text,
    "≈ $0.16 · 2 images × $0.08");
});

test("cached requests cost nothing", () => {
  assert.equal(estimateRun(falImage, { images: 3, cached: 2 }).total, 0.04);
  assert.equal(formatPriceBadge(falImage, { images: 2, cached: 2 }).text, "≈ $0 · 0 images × $0.04");
});

test("the last run, from the node's executed data", () => {
  // With the runtime's explicit fields.
  assert.deepEqual(lastRunFromOutput({ fal_items: [3], fal_cost: [0.12], fal_cached: [1], fal_megapixels: [0.25] }),
    { items: 3, cached: 1, cost: 0.12, billed: null, megapixels: 0.25 });
  assert.deepEqual(lastRunFromOutput({ fal_items: [2], fal_cost: [0.06], fal_billed: [0.08], fal_cached: [0] }),
    { items: 2, cached: 0, cost: 0.06, billed: 0.08, megapixels: null });
  // From the status line and request ids alone.
  assert.deepEqual(lastRunFromOutput({
    fal_request_ids: ["a", "b"], fal_status: ["done in 4.1s · 2 image(s) · ≈ $0.080 · 2 image × $0.04\nnote"] }),
  { items: 2, cached: 0, cost: 0.08, billed: null, megapixels: null });
  assert.deepEqual(lastRunFromOutput({
    fal_request_ids: ["", ""], fal_status: ["done in 0.1s · 2 image(s) · 2 of 2 from cache (no charge)"] }),
  { items: 2, cached: 2, cost: 0, billed: null, megapixels: null });
  assert.deepEqual(lastRunFromOutput({
    fal_request_ids: ["a", ""], fal_status: ["done in 1.0s · 2 image(s) · ≈ $0.030 (estimate) · 1 MP × $0.03 · 1 of 2 from cache (no charge)"] }),
  { items: 2, cached: 1, cost: 0.03, billed: null, megapixels: 1 });
  // Per megapixel: the input size comes back from the status line and num_images.
  assert.deepEqual(lastRunFromOutput({
    fal_request_ids: ["a"], fal_status: ["done in 1.6s · 2 image(s) · ≈ $0.024 (estimate) · 0.7864 MP × $0.03"] },
  { numImages: 2 }), { items: 1, cached: 0, cost: 0.024, billed: null, megapixels: 0.3932 });
  assert.equal(lastRunFromOutput({ fal_request_ids: ["a"], fal_status: ["done"] }).cost, null);
  assert.equal(lastRunFromOutput({ images: [] }), null);
  assert.equal(lastRunFromOutput(undefined), null);
});

test("the last run's badge", () => {
  assert.equal(formatLastRun({ items: 2, cached: 0, cost: 0.08 }), "last run ≈ $0.08 (estimate)");
  assert.equal(formatLastRun({ items: 2, cached: 0, cost: 0.06, billed: 0.08 }),
    "last run $0.08 billed (≈ $0.06 estimated)");
  assert.equal(formatLastRun({ items: 2, cached: 2, cost: 0 }), "last run $0 · 2 of 2 cached");
  assert.equal(formatLastRun({ items: 1, cached: 0, cost: null }), "last run cost unknown");
  assert.equal(formatLastRun(null), "");
});

test("the spend view", () => {
  const at = new Date(2026, 0, 2, 14, 3, 22).getTime() / 1000;
  assert.equal(formatClock(at), "14:03:22");
  const view = spendView({
    entries: [
      { endpoint: "fal-ai/image-editing/color-correction", title: "fal Color Correction",
        request_id: "req-1", cached: false, estimated_usd: 0.05, at },
      { endpoint: "fal-ai/image-editing/color-correction", title: "fal Color Correction",
        request_id: "req-1", cached: true, estimated_usd: 0, at },
    ],
    total: 0.05, billed: 1, cached: 1,
  });
  assert.deepEqual(view.rows[0], { time: "14:03:22", title: "fal Color Correction",
    endpoint: "fal-ai/image-editing/color-correction", requestId: "req-1", state: "sent", cached: false,
    usd: "$0.05", billed: "estimate" });
  assert.equal(view.rows[1].state, "cached (no charge)");
  assert.equal(view.rows[1].usd, "$0");
  assert.equal(view.totalLine, "$0.05 this session (estimates: fal sent no bill yet) · 1 request, 1 from cache");
  // fal's bill beside the estimate.
  const billed = spendView({
    entries: [
      { endpoint: "e", request_id: "r1", cached: false, estimated_usd: 0.003, billed_usd: 0.03, state: "billed", at,
        queue_s: 1.2, run_s: 3.5 },
      { endpoint: "e", request_id: "", cached: false, estimated_usd: 0.04, billed_usd: null,
        state: "sent, answer lost (estimate)", at },
    ],
    total: 0.07, billed_total: 0.03, estimated_total: 0.04, billed: 2, with_bill: 1, cached: 0,
  });
  assert.deepEqual([billed.rows[0].usd, billed.rows[0].billed, billed.rows[1].billed], ["$0.003", "$0.03", "estimate"]);
  assert.equal(billed.rows[0].state, "billed · queue 1.2s, run 3.5s");
  assert.equal(billed.totalLine, "$0.07 this session ($0.03 billed by fal for 1, ≈ $0.04 estimated for 1) · 2 requests, 0 from cache");
  assert.deepEqual(spendView({ entries: [], total: 0 }), { rows: [], totalLine: "No fal calls in this session yet." });
  assert.deepEqual(spendView(null).rows, []);
});

test("where prices come from", () => {
  const fal = { prices: { a: { source: "fal" } }, fresh: true, fallback_date: "2026-11-26" };
  assert.equal(priceSourceLine(fal), "Prices from fal's price list (checked within a day).");
  const shipped = { prices: { a: { source: "fallback" } }, fresh: false, fallback_date: "2026-11-26", refreshing: true };
  assert.match(priceSourceLine(shipped), /shipped with the pack of 2026-11-26 \(estimates\); asking fal/);
  assert.equal(priceSourceLine(null), "Prices not loaded yet.");
});

// The rules GET /fal/prices sends with Recraft V3's price (nodes/pricing.py PRICE_RULES).
const recraft = {
  unitPrice: 0.04, unit: "image", source: "fal",
  rules: [{ field: "num_images", per_value: true, why: "images per request" },
    { field: "style", multiplier: 2, prefix: "vector_illustration", why: "vector style" }],
};

test("price rules: Recraft's vector styles cost twice the raster price", () => {
  const raster = formatPriceBadge(recraft, { images: 1, inputs: { style: "realistic_image" } });
  assert.equal(raster.text, "≈ $0.04 · 1 image × $0.04");
  const vector = formatPriceBadge(recraft, { images: 2, inputs: { style: "vector_illustration/line_art" } });
  assert.equal(vector.text, "≈ $0.16 · 2 images × $0.08 (vector style)");
  assert.match(vector.title, /vector style: 2 × \$0.04/);
  assert.equal(estimateRun(recraft, { inputs: { style: "vector_illustration" } }).total, 0.08);
  // Cached requests still cost nothing.
  assert.equal(estimateRun(recraft, { images: 2, cached: 2, inputs: { style: "vector_illustration" } }).total, 0);
});

test("price rules are generic: equals, prefix, per_value and per-megapixel prices", () => {
  const rules = [{ field: "resolution", multiplier: 4, equals: ["4K"], why: "4K" },
    { field: "count", per_value: true }];
  assert.deepEqual(applyPriceRules(rules, { resolution: "4K", count: 3 }),
    { perRequest: 3, multiplier: 4, why: "4K" });
  assert.deepEqual(applyPriceRules(rules, { resolution: "2K", count: "x" }),
    { perRequest: 1, multiplier: 1, why: "" });
  const perMp = { unitPrice: 0.02, unit: "megapixel", source: "fal", rules };
  assert.equal(formatPriceBadge(perMp, { megapixels: 2, inputs: { resolution: "4K", count: 2 } }).text,
    "≈ $0.32 · 4 MP × $0.08/MP (4K) · estimate");
  // No rules from the server (an older one): num_images still counts.
  assert.equal(formatPriceBadge(falImage, { inputs: { num_images: 2 } }).text, "≈ $0.08 · 2 images × $0.04");
});

test("a node's endpoint is fixed or read from its widget; an unpriced one says price unknown", async () => {
  const { nodePriceInfo } = await import("../lib/price.js");
  const answer = {
    prices: { "fal-ai/birefnet": { unit_price: 0.003, unit: "image", source: "fal" } },
    nodes: { FalSharpen: { endpoint_id: "fal-ai/post-processing/sharpen", multi: false },
      FalImageEndpoint: { endpoint_widget: "endpoint", multi: false } },
  };
  const widgets = { endpoint: "fal-ai/birefnet" };
  const generic = nodePriceInfo(answer, "FalImageEndpoint", (name) => widgets[name]);
  assert.deepEqual(generic, { endpointId: "fal-ai/birefnet", multi: false,
    price: { unitPrice: 0.003, unit: "image", source: "fal", rules: undefined }, inputs: {}, learned: null });
  widgets.arguments = '{"num_images": 3}';
  const three = nodePriceInfo(answer, "FalImageEndpoint", (name) => widgets[name]);
  assert.equal(formatPriceBadge({ ...three.price, rules: [{ field: "num_images", per_value: true }] },
    { inputs: three.inputs }).text, "≈ $0.009 · 3 images × $0.003");
  widgets.endpoint = "fal-ai/unpriced";
  const unknown = nodePriceInfo(answer, "FalImageEndpoint", (name) => widgets[name]);
  assert.equal(formatPriceBadge(unknown.price).text, "price unknown");
  assert.equal(nodePriceInfo(answer, "FalSharpen").endpointId, "fal-ai/post-processing/sharpen");
  assert.equal(nodePriceInfo(answer, "SomethingElse"), null);
});
