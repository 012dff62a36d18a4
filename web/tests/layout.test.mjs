import { test } from "node:test";
import assert from "node:assert/strict";
import { makeRoomMoves, RESULT_MAX_ROWS, RESULT_ROW_PX, resultPanelHeight } from "../lib/layout.js";
import { CHIP_MAX_CHARS, priceChip, shortLastRun, shortPrice } from "../lib/badges.js";
import { estimateRun } from "../lib/price.js";

test("the result panel holds whole rows, at most RESULT_MAX_ROWS of them", () => {
  assert.equal(resultPanelHeight(0), 0);
  assert.equal(resultPanelHeight(3), 3 * RESULT_ROW_PX + 6);
  assert.equal(resultPanelHeight(50), RESULT_MAX_ROWS * RESULT_ROW_PX + 6);
  // Every height it gives is padding plus whole rows: no row cut in half.
  for (let rows = 1; rows < 20; rows++) assert.equal((resultPanelHeight(rows) - 6) % RESULT_ROW_PX, 0);
});

const node = (id, x, y, w, h) => ({ id, pos: [x, y], size: [w, h] });

test("a grown node pushes the node it now covers below it, keeping a gap", () => {
  const grown = node(1, 400, 140, 400, 480);          // body 140..620
  const note = node(2, 40, 590, 650, 120);             // title top 560: covered
  const moves = makeRoomMoves(grown, [grown, note], { gap: 20, titleHeight: 30 });
  assert.deepEqual(moves.map((m) => [m.node.id, m.dy]), [[2, 620 + 20 - 560]]);
});

test("nodes beside, above, or not covered stay where they are", () => {
  const grown = node(1, 400, 140, 400, 480);
  const beside = node(2, 850, 300, 200, 100);          // to the right
  const above = node(3, 400, -200, 300, 100);          // above its top
  const farBelow = node(4, 400, 800, 300, 100);        // below its new bottom
  const sideBySide = node(5, 100, 140, 300, 600);      // left edge touches: no overlap
  assert.deepEqual(makeRoomMoves(grown, [grown, beside, above, farBelow, sideBySide]), []);
});

test("badge chip: short in every case the price rules give", () => {
  const falImage = { unitPrice: 0.04, unit: "image", source: "fal" };
  assert.equal(priceChip(estimateRun(falImage, { images: 2 }), null), "≈ $0.08");
  assert.equal(priceChip(estimateRun(falImage), { items: 1, cached: 0, cost: 0.04 }), "≈ $0.04 · last $0.04");
  assert.equal(priceChip(estimateRun(falImage), { items: 2, cached: 2, cost: 0 }), "≈ $0.04 · last $0 cached");
  assert.equal(priceChip(estimateRun(null), null), "price ?");
  assert.equal(shortPrice(estimateRun({ unitPrice: 0.001, unit: "second", source: "fal" })), "price varies");
  assert.equal(shortPrice(estimateRun({ unitPrice: 0.001, unit: "second", source: "fal" },
    { inputs: { upscale_factor: 4 }, learned: [{ inputs: { upscale_factor: 4 }, usd: 0.0027 }] })), "billed $0.0027");
  assert.equal(shortLastRun({ items: 1, cached: 0, cost: 0.04, billed: 0.05 }), "last $0.05");
  assert.equal(shortLastRun({ items: 1, cached: 0, cost: null }), "last ?");
  assert.equal(shortLastRun(null), "");
  const longest = priceChip(estimateRun({ unitPrice: 12.3456, unit: "image", source: "fal" }, { images: 4, numImages: 2 }),
    { items: 4, cached: 1, cost: 88.88 });
  assert.ok(longest.length <= CHIP_MAX_CHARS, longest);
});

test("badge chip follows the price rules (Recraft's vector styles cost twice)", () => {
  const recraft = { unitPrice: 0.04, unit: "image", source: "fal",
    rules: [{ field: "num_images", per_value: true }, { field: "style", prefix: "vector_illustration", multiplier: 2 }] };
  assert.equal(priceChip(estimateRun(recraft, { inputs: { style: "realistic_image" } }), null), "≈ $0.04");
  assert.equal(priceChip(estimateRun(recraft, { inputs: { style: "vector_illustration/line_art" } }), null), "≈ $0.08");
});
