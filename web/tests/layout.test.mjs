import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  BADGE_ROW_PX, cascadeMoves, classicBox, DOM_WIDGET_MARGIN_PX, domWidgetHeight, FORM_EMPTY_PX, FORM_GAP_PX, FORM_MAX_PX, FORM_PADDING_PX, FORM_ROW_PX, FORM_TEXTAREA_PX,
  formHeight, GAP_PX, groupGrowth, GROUP_PADDING_PX, RESULT_MAX_ROWS, RESULT_ROW_PX, resultPanelHeight, wrappedHeight,
} from "../lib/layout.js";
import { CHIP_MAX_CHARS, priceChip, shortLastRun, shortPrice, unknownReason } from "../lib/badges.js";
import { estimateRun } from "../lib/price.js";
import { describeFields } from "../lib/schema_form.js";
import { createLayout } from "../layout.js";
import { createFrontend } from "../lib/frontend.js";
import { makeApp, makeNode, tick } from "./fake_comfy.mjs";

test("the result panel holds whole rows, at most RESULT_MAX_ROWS of them", () => {
  assert.equal(resultPanelHeight(0), 0);
  assert.equal(resultPanelHeight(3), 3 * RESULT_ROW_PX + 6);
  assert.equal(resultPanelHeight(50), RESULT_MAX_ROWS * RESULT_ROW_PX + 6);
  // Every height it gives is padding plus whole rows: no row cut in half.
  for (let rows = 1; rows < 20; rows++) assert.equal((resultPanelHeight(rows) - 6) % RESULT_ROW_PX, 0);
});

const box = (id, left, top, width, height) => ({ id, left, right: left + width, top, bottom: top + height });
const moved = (moves) => Object.fromEntries(moves.map((m) => [m.id, m.dy]));

test("a grown node pushes the node it now covers below it, keeping a gap", () => {
  const grown = box(1, 400, 110, 400, 510);          // bottom 620
  const note = box(2, 40, 560, 650, 150);             // top 560: covered
  assert.deepEqual(cascadeMoves(grown, [grown, note], { gap: 20 }), [{ id: 2, dy: 620 + 20 - 560 }]);
});

test("item 1: every node below moves, down the column, not only the next one", () => {
  // "Crop, Remove People, Sharpen": the fal node grows over fal Settings, which then covers
  // fal Key, which covers a note. Before, only fal Settings moved and landed on fal Key.
  const grown = box("sharpen", 0, 0, 300, 500);
  const settings = box("settings", 0, 400, 300, 300);    // covered by 100
  const key = box("key", 0, 720, 300, 80);               // 20 below settings: covered once settings moved
  const note = box("note", 100, 810, 200, 60);           // below key
  const beside = box("beside", 320, 600, 200, 100);      // another column: stays
  const farBelow = box("far", 0, 2000, 300, 100);        // far enough: stays
  const moves = moved(cascadeMoves(grown, [grown, settings, key, note, beside, farBelow], { gap: 20 }));
  assert.deepEqual(moves, { settings: 120, key: 120, note: 130 });   // the note was 10 px under fal Key
  // Nothing overlaps any more.
  const after = [grown, settings, key, note].map((b) => ({ ...b, top: b.top + (moves[b.id] ?? 0), bottom: b.bottom + (moves[b.id] ?? 0) }));
  for (let i = 1; i < after.length; i++) assert.ok(after[i].top >= after[i - 1].bottom, `${after[i].id} under ${after[i - 1].id}`);
});

test("a node pushed by two others moves once, as far as the lower one needs", () => {
  const grown = box(1, 0, 0, 600, 400);
  const left = box(2, 0, 350, 280, 300);       // bottom 650 -> 720 after moving 70
  const right = box(3, 320, 380, 280, 100);    // bottom 480 -> 520 after moving 40
  const under = box(4, 0, 660, 600, 50);       // covered by `left` only after it moved
  const moves = moved(cascadeMoves(grown, [grown, left, right, under], { gap: 20 }));
  assert.deepEqual(moves, { 2: 70, 3: 40, 4: 720 + 20 - 660 });
});

test("nodes beside, above, or not covered stay where they are", () => {
  const grown = box(1, 400, 110, 400, 510);
  const beside = box(2, 850, 270, 200, 130);
  const above = box(3, 400, -230, 300, 130);
  const farBelow = box(4, 400, 770, 300, 130);
  const sideBySide = box(5, 100, 110, 300, 630);      // left edge touches: no overlap
  assert.deepEqual(cascadeMoves(grown, [grown, beside, above, farBelow, sideBySide]), []);
});

test("a group grows to keep the nodes that moved inside it; others stay", () => {
  const frame = { id: "g", left: 0, right: 400, top: -60, bottom: 820 };
  const elsewhere = { id: "h", left: 500, right: 900, top: 0, bottom: 300 };
  const settings = box("settings", 10, 500, 300, 300);      // inside the frame
  const outside = box("out", 10, 900, 300, 50);            // below the frame
  const growth = groupGrowth([frame, elsewhere], [settings, outside], [{ id: "settings", dy: 100 }, { id: "out", dy: 100 }]);
  assert.deepEqual(growth, [{ id: "g", dh: 800 + 100 + GROUP_PADDING_PX - 820 }]);
  assert.deepEqual(groupGrowth([frame], [settings], [{ id: "settings", dy: 5 }]), []);   // still fits
});

test("classic canvas: a node's box includes its title and the badge row above it", () => {
  // 1.27 drew the next node's badges over the request-id line: they are part of its box.
  const b = classicBox({ id: 9, pos: [10, 200], size: [300, 120] }, { titleHeight: 30 });
  assert.deepEqual(b, { id: 9, left: 10, right: 310, top: 200 - 30 - BADGE_ROW_PX, bottom: 320 });
});

const catalogue = JSON.parse(readFileSync(new URL("../../nodes/data/catalogue.json", import.meta.url)));
const entry = (id) => ({ id, ...catalogue.endpoints[id] });

test("item 2: fal Image Endpoint's form is as tall as its rows (it was one 40 px row)", () => {
  const fields = describeFields(entry("fal-ai/bytedance/seedream/v4.5/edit"));
  const tall = fields.filter((f) => f.control === "textarea").length;
  const expected = FORM_PADDING_PX + FORM_GAP_PX * (fields.length - 1) + tall * FORM_TEXTAREA_PX + (fields.length - tall) * FORM_ROW_PX;
  assert.ok(fields.length >= 5);
  assert.equal(formHeight(fields), expected);
  assert.ok(formHeight(fields) > 150, String(formHeight(fields)));
  // Notes above the rows count their wrapped lines.
  assert.equal(formHeight([{ note: "x".repeat(100) }]), FORM_PADDING_PX + 3 * 16);
  assert.equal(formHeight([]), FORM_EMPTY_PX);
  // Dozens of fields scroll inside the node instead of making it a screen tall.
  assert.equal(formHeight(Array(60).fill({ control: "text" })), FORM_MAX_PX);
});

test("item 2: the node grows to hold the form and moves the nodes below", async () => {
  const form = { options: { getMinHeight: () => 40 } };
  const endpointNode = makeNode(1, { pos: [0, 100], size: [400, 200], widgets: [{ name: "endpoint" }, { name: "arguments" }] });
  endpointNode.widgets.push(form);
  const below = makeNode(2, { pos: [0, 360], size: [400, 100] });
  const fe = createFrontend({ app: makeApp([endpointNode, below]) });
  const layout = createLayout(fe);
  layout.fitNode(endpointNode);             // 40 px form: fits, nothing moves
  await tick();
  assert.deepEqual([endpointNode.size[1], below.pos[1]], [200, 360]);
  form.options.getMinHeight = () => 300;   // an endpoint was picked
  layout.fitNode(endpointNode);
  await tick();
  assert.equal(endpointNode.size[1], 10 + 24 * 2 + 300);
  const bottom = 100 + endpointNode.size[1];
  assert.equal(below.pos[1] - 30 - BADGE_ROW_PX, bottom + GAP_PX);
});

test("fitNode keeps what the user added to the node before the run", async () => {
  const node = makeNode(1, { size: [300, 400], widgets: [{ name: "prompt" }] });   // minimum 34
  const fe = createFrontend({ app: makeApp([node]) });
  const layout = createLayout(fe);
  layout.rememberBase(node);
  node.widgets.push({ options: { getMinHeight: () => 100 } });
  layout.fitNode(node);
  assert.equal(node.size[1], 400 + 100);
});

test("Nodes 2.0: the boxes are measured from the nodes' elements (chips included)", async () => {
  const grown = makeNode(1, { pos: [0, 0], size: [300, 100] });
  const below = makeNode(2, { pos: [0, 200], size: [300, 100] });
  const app = makeApp([grown, below], { vue: true });
  // Screen = (graph + offset) * scale + canvas origin; the grown node's element is taller
  // than its node.size says, and its chip row spills 20 px further.
  app.canvas.ds = { scale: 2, offset: [10, 0] };
  app.canvas.canvas = { getBoundingClientRect: () => ({ left: 100, top: 50 }) };
  const rect = (left, top, width, height) => ({ left, top, width, height, right: left + width, bottom: top + height });
  const screen = (x, y) => [(x + 10) * 2 + 100, (y + 0) * 2 + 50];
  const elements = {
    1: { getBoundingClientRect: () => rect(...screen(0, -30), 600, 700), children: [{ getBoundingClientRect: () => rect(...screen(0, 300), 200, 40) }] },
    2: { getBoundingClientRect: () => rect(...screen(0, 170), 600, 260), children: [] },
  };
  const doc = { querySelector: (s) => elements[/"(\d+)"/.exec(s)[1]] };
  const fe = createFrontend({ app, doc });
  assert.deepEqual(fe.measuredBox(grown), { id: 1, left: 0, right: 300, top: -30, bottom: 320 });
  const moves = createLayout(fe).makeRoom(grown);
  assert.deepEqual(moves, [{ id: 2, dy: 320 + GAP_PX - 170 }]);
  assert.equal(below.pos[1], 200 + 320 + GAP_PX - 170);
});

test("a DOM widget asks for its content plus the front end's margin above and below", () => {
  // 1.27 and 1.58 give the element the widget's height minus 2 x 10 px: the result panel's
  // last row and the form's last field sat 20 px past the node's bottom edge.
  assert.equal(DOM_WIDGET_MARGIN_PX, 10);
  assert.equal(domWidgetHeight(72), 92);
  assert.equal(domWidgetHeight(0), 0);
});

test("a failure sentence's height follows its wrapped lines", () => {
  assert.equal(wrappedHeight(["short"], 300), 16 + 6);
  assert.equal(wrappedHeight(["x".repeat(200)], 124), 10 * 16 + 6);   // 20 characters a line
  assert.equal(wrappedHeight(["a", "b"], 300), 2 * 16 + 6);
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

test("item 6: 'price ?' says why", () => {
  const unknown = estimateRun(null);
  const reasons = [
    [null, "loading"],
    [{ can_ask_fal: false, not_listed: [] }, "no fal key"],
    [{ can_ask_fal: true, not_listed: ["a/b"] }, "no fal price"],
    [{ can_ask_fal: true, not_listed: [] }, "asking fal"],
  ];
  for (const [answer, reason] of reasons) {
    assert.equal(unknownReason(answer, "a/b"), reason);
    const chip = priceChip(unknown, null, unknownReason(answer, "a/b"));
    assert.equal(chip, `price ? (${reason})`);
    assert.ok(chip.length <= CHIP_MAX_CHARS, chip);
  }
  // After a run the chip has the last run's cost instead.
  assert.equal(priceChip(unknown, { items: 1, cached: 0, cost: null }, "no fal key"), "price ? · last ?");
});

test("badge chip follows the price rules (Recraft's vector styles cost twice)", () => {
  const recraft = { unitPrice: 0.04, unit: "image", source: "fal",
    rules: [{ field: "num_images", per_value: true }, { field: "style", prefix: "vector_illustration", multiplier: 2 }] };
  assert.equal(priceChip(estimateRun(recraft, { inputs: { style: "realistic_image" } }), null), "≈ $0.04");
  assert.equal(priceChip(estimateRun(recraft, { inputs: { style: "vector_illustration/line_art" } }), null), "≈ $0.08");
});
