import { test } from "node:test";
import assert from "node:assert/strict";
import { installDom } from "./fake_dom.mjs";
import { makeApi, makeApp, makeNode, tick } from "./fake_comfy.mjs";
import { createFrontend, PROGRESS_TEXT_WIDGET } from "../lib/frontend.js";
import { createLayout } from "../layout.js";
import { createResultPanel } from "../result_panel.js";
import { GAP_PX } from "../lib/layout.js";

function setUp() {
  installDom();
  const sharpen = makeNode(3, { pos: [0, 0], size: [320, 120], widgets: [{ name: "sharpen_mode" },
    { name: PROGRESS_TEXT_WIDGET }] });
  const settings = makeNode(4, { type: "FalSettings", pos: [0, 200], size: [320, 200] });
  const key = makeNode(5, { type: "FalKey", pos: [0, 460], size: [320, 60] });
  const app = makeApp([sharpen, settings, key]);
  // The template's purple frame around the three nodes.
  app.graph._groups.push({ pos: [-10, -90], size: [340, 630] });
  const frontend = createFrontend({ app, api: makeApi() });
  const results = createResultPanel({ frontend, layout: createLayout(frontend) });
  return { sharpen, settings, key, results, group: app.graph._groups[0] };
}

const panelOf = (node) => node.widgets.find((w) => w.name === "fal_result");
const overlaps = (upper, lower) => lower.pos[1] - 30 - 22 < upper.pos[1] + upper.size[1];

test("item 5: a failure's sentence is in the node's body, and the node grows to show it", async () => {
  const { sharpen, results } = setUp();
  sharpen.size = [320, 40];   // a small node grows to hold the sentence
  const sentence = "fal Sharpen: fal rejected the key 'work' (401); check it in Settings → fal.";
  assert.equal(results.showFailure(sharpen, [sentence]), true);
  const panel = panelOf(sharpen);
  assert.equal(panel.element.textContent, sentence);
  assert.ok(panel.element.querySelector(".fal-result-failed"));
  // The element's height, plus the front end's 10 px margin above and below it.
  assert.equal(panel.options.getMinHeight(), Number.parseInt(panel.element.style.height, 10) + 20);
  // The progress text would say "failed · ..." a second time (1.27 keeps it).
  assert.equal(sharpen.widgets.some((w) => w.name === PROGRESS_TEXT_WIDGET), false);
  assert.ok(sharpen.size[1] >= sharpen.computeSize()[1]);
  results.clear(sharpen);
  assert.equal(panel.element.textContent, "");
  assert.equal(panel.options.getMinHeight(), 0);
});

test("item 1: after a run the node grows and every node below it moves, none on another", async () => {
  const { sharpen, settings, key, results, group } = setUp();
  const output = { fal_urls: ["https://v3.fal.media/files/a.png", "https://v3.fal.media/files/b.png"],
    fal_request_ids: ["req-1", "req-2"], fal_status: ["done in 4.1s · 2 image(s)"] };
  results.showResult(sharpen, output);
  await tick();
  const panel = panelOf(sharpen);
  assert.match(panel.element.textContent, /done in 4\.1s/);
  assert.match(panel.element.textContent, /request req-2/);
  assert.ok(sharpen.size[1] > 120);
  assert.equal(overlaps(sharpen, settings), false);
  assert.equal(overlaps(settings, key), false);       // before: fal Key ended up under fal Settings
  assert.equal(settings.pos[1] - 52, sharpen.pos[1] + sharpen.size[1] + GAP_PX);
  // fal Key stays inside its frame (the frame grew with it).
  assert.ok(group.pos[1] + group.size[1] >= key.pos[1] + key.size[1]);
});

test("an output without results leaves the node as it was", () => {
  const { sharpen, results } = setUp();
  assert.equal(results.showResult(sharpen, { text: ["x"] }), false);
  assert.equal(results.showFailure(sharpen, ["", null]), false);
  assert.equal(panelOf(sharpen), undefined);
});

test("item 5: a refusal shows until the next prompt is accepted; a run failure until the node runs again", () => {
  const { sharpen, key, results } = setUp();
  const text = (node) => panelOf(node)?.element.textContent ?? "";
  const refusal = { [key.id]: { errors: [{ type: "custom_validation_failed", details: "key_name - this workflow uses a fal key named 'work'",
    extra_info: { input_name: "key_name" } }] } };
  results.showPromptErrors([sharpen, key], refusal);
  assert.equal(text(key), "This workflow uses a fal key named 'work'.");
  // The next prompt: sharpen fails at once, and ComfyUI's "accepted" answer arrives after it.
  results.showRunFailure(sharpen, "fal Sharpen: fal rejected the key (401); pick another key.");
  results.showPromptErrors([sharpen, key], {});
  assert.equal(text(key), "");                                         // the old refusal is gone
  assert.equal(text(sharpen), "fal Sharpen: fal rejected the key (401); pick another key.");   // kept
  results.startRun(sharpen);
  assert.equal(text(sharpen), "");
});

test("the fal Spend node's report (its ui text) is in its body, one line a row, and the node grows", () => {
  const { results } = setUp();
  const spend = makeNode(9, { type: "FalSpend", pos: [400, 0], size: [300, 60] });
  const report = "endpoint | request id | state | estimate (USD) | billed (USD)\n" +
    "fal-ai/aura-sr | 6ca8 | billed | 0.2500 | 0.0009\n" +
    "total this session: $0.0009 ($0.0009 billed by fal for 1 request(s), $0.0000 estimated for 0; 0 from cache)";
  assert.equal(results.showReport(spend, { text: [report] }), true);
  const panel = panelOf(spend);
  const rows = [...panel.element.querySelectorAll(".fal-result-report")].map((row) => row.textContent);
  assert.deepEqual(rows, report.split("\n"));
  // Long lines wrap (the billed column ends them): more 16 px lines than rows.
  assert.ok(Number.parseInt(panel.element.style.height, 10) > 3 * 16 + 6);
  assert.ok(spend.size[1] >= spend.computeSize()[1]);
  // A second run's report replaces the first; an output without text leaves the panel alone.
  assert.equal(results.showReport(spend, { text: ["total this session: $0.00"] }), true);
  assert.equal(panel.element.textContent, "total this session: $0.00");
  assert.equal(results.showReport(spend, {}), false);
  assert.equal(panel.element.textContent, "total this session: $0.00");
});
