import { test } from "node:test";
import assert from "node:assert/strict";
import {
  addColor, formatColors, labelColor, parseColor, parseColors, removeColor, splitColorText,
} from "../lib/colors.js";

test("splits like parse_colors in nodes/spec.py", () => {
  assert.deepEqual(splitColorText("#ff8800, #223344"), ["#ff8800", "#223344"]);
  assert.deepEqual(splitColorText("rgb(255,136,0); 34 51 68\n#abc"), ["rgb(255,136,0)", "34 51 68", "#abc"]);
  assert.deepEqual(splitColorText(" , ;\n"), []);
  assert.deepEqual(splitColorText(undefined), []);
  assert.deepEqual(splitColorText("(1, 2, 3), #fff"), ["(1, 2, 3)", "#fff"]);
});

test("reads hex, short hex and rgb triples; rejects the rest", () => {
  assert.equal(parseColor("#FF8800"), "#ff8800");
  assert.equal(parseColor("ff8800"), "#ff8800");
  assert.equal(parseColor("#abc"), "#aabbcc");
  assert.equal(parseColor("rgb(255, 136, 0)"), "#ff8800");
  assert.equal(parseColor("34 51 68"), "#223344");
  assert.equal(parseColor("(0,0,0)"), "#000000");
  assert.equal(parseColor("rgb(256, 0, 0)"), null);
  assert.equal(parseColor("orange"), null);
  assert.equal(parseColor("#ff88"), null);
  assert.equal(parseColor(""), null);
});

test("text -> swatches keeps order and marks entries that are not colours", () => {
  assert.deepEqual(parseColors("#ff8800, orange, rgb(1,2,3)"), [
    { text: "#ff8800", hex: "#ff8800" },
    { text: "orange", hex: null },
    { text: "rgb(1,2,3)", hex: "#010203" },
  ]);
  assert.deepEqual(parseColors(""), []);
});

test("adding a colour appends it in the node's own format", () => {
  assert.equal(addColor("", "#FF8800"), "#ff8800");
  assert.equal(addColor("#ff8800", "#223344"), "#ff8800, #223344");
  assert.equal(addColor("#ff8800;#223344", "#00ff00"), "#ff8800, #223344, #00ff00");
  assert.equal(addColor("rgb(1, 2, 3)", "#abcdef"), "rgb(1, 2, 3), #abcdef");
  assert.equal(addColor("#ff8800, #223344", "#FF8800"), "#ff8800, #223344");   // already there
  assert.throws(() => addColor("", "orange"), /not a colour/);
});

test("removing a swatch removes exactly that entry and keeps the others' spelling", () => {
  assert.equal(removeColor("#ff8800, #223344", 0), "#223344");
  assert.equal(removeColor("#ff8800, #223344", 1), "#ff8800");
  assert.equal(removeColor("#ff8800, orange, rgb(1,2,3)", 1), "#ff8800, rgb(1,2,3)");
  assert.equal(removeColor("#ff8800", 0), "");
  assert.equal(removeColor("#ff8800", 5), "#ff8800");
  assert.equal(removeColor("#ff8800", -1), "#ff8800");
});

test("round trip: add then remove gives the text back", () => {
  const start = "#ff8800, #223344";
  const added = addColor(start, "#00aa00");
  assert.equal(removeColor(added, parseColors(added).length - 1), start);
  assert.equal(formatColors(splitColorText(start)), start);
});

test("swatch labels stay readable", () => {
  assert.equal(labelColor("#ffffff"), "#000000");
  assert.equal(labelColor("#ffee00"), "#000000");
  assert.equal(labelColor("#000000"), "#ffffff");
  assert.equal(labelColor("#223344"), "#ffffff");
  assert.equal(labelColor("nope"), "#000000");
});
