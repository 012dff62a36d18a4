import { test } from "node:test";
import assert from "node:assert/strict";
import { failureLines, nodeErrorSentences } from "../lib/failure.js";

test("a VALIDATE_INPUTS refusal is the node's own sentence, without ComfyUI's 'key_name - '", () => {
  const own = "this workflow uses a fal key named 'work', which is not saved on this ComfyUI server; " +
    "add your key under that name in Settings → fal, or pick 'environment FAL_KEY' in this node.";
  const nodeError = { class_type: "FalKey", errors: [{ type: "custom_validation_failed",
    message: "Custom validation failed for node", details: `key_name - ${own}`, extra_info: { input_name: "key_name" } }] };
  assert.deepEqual(nodeErrorSentences(nodeError), ["T" + own.slice(1)]);
});

test("ComfyUI's own refusals keep what they say", () => {
  const nodeError = { errors: [
    { type: "value_not_in_list", message: "Value not in list", details: "cache: 'sometimes' not in ['use', 'refresh', 'off']" },
    { type: "required_input_missing", message: "Required input is missing", details: "image" },
  ] };
  assert.deepEqual(nodeErrorSentences(nodeError), [
    "Value not in list: cache: 'sometimes' not in ['use', 'refresh', 'off'].",
    "Required input is missing: image.",
  ]);
  assert.deepEqual(nodeErrorSentences(undefined), []);
  assert.deepEqual(nodeErrorSentences({ errors: [{}] }), []);
});

test("the panel's lines: one sentence each, no repeats, nothing empty", () => {
  assert.deepEqual(failureLines("fal Sharpen: fal rejected the key;  pick another  "),
    ["fal Sharpen: fal rejected the key; pick another."]);
  assert.deepEqual(failureLines(["a b", "a b.", "", null]), ["A b."]);
});
