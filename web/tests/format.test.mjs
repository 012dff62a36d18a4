import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ENV_CHOICE, errorLine, formatBytes, formatElapsed, keyChoices, keyLabel, keyTestLine, resultView,
  shortUrl,
} from "../lib/format.js";

test("sizes and durations", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1234567), "1.2 MB");
  assert.equal(formatBytes(-3), "0 B");
  assert.equal(formatElapsed(4.12), "4.1s");
  assert.equal(formatElapsed(125), "2m 05s");
  assert.equal(formatElapsed(3720), "1h 02m");
});

test("result URLs are shortened to host and file name", () => {
  assert.equal(shortUrl("https://v3.fal.media/files/tiger/abc123/result.png"), "v3.fal.media/…/result.png");
  assert.equal(shortUrl("http://127.0.0.1:8765/cdn/f/xyz.png"), "127.0.0.1:8765/…/xyz.png");
  const long = "https://v3.fal.media/files/" + "x".repeat(80) + ".png";
  assert.ok(shortUrl(long).length <= 48 && shortUrl(long).includes("…"));
  assert.equal(shortUrl("data:image/png;base64," + "A".repeat(4000)), "inline image/png (3.0 KB)");
  assert.equal(shortUrl("data:image/jpeg;base64,"), "inline image/jpeg (not kept by fal)");
  assert.equal(shortUrl("not a url"), "not a url");
});

test("a fal node's UI output becomes the result panel", () => {
  const view = resultView({
    fal_urls: ["https://v3.fal.media/files/a/1.png", "https://v3.fal.media/files/a/2.png"],
    fal_request_ids: ["req-1", "req-2"],
    fal_status: ["done in 4.1s · 2 image(s)\ninput 5000x3000 downscaled to 4000x2400"],
  });
  assert.equal(view.summary, "done in 4.1s · 2 image(s)");
  assert.deepEqual(view.urls.map((u) => u.label), ["v3.fal.media/…/1.png", "v3.fal.media/…/2.png"]);
  assert.deepEqual(view.requestIds, ["req-1", "req-2"]);
  assert.equal(view.copyText, "https://v3.fal.media/files/a/1.png\nhttps://v3.fal.media/files/a/2.png");
  assert.equal(view.urls[0].inline, false);
});

test("result panel: inline results, missing status, nothing to show", () => {
  const view = resultView({ fal_urls: ["data:image/png;base64,AAAA"], fal_request_ids: [""] });
  assert.equal(view.summary, "1 result(s)");
  assert.equal(view.urls[0].inline, true);
  assert.deepEqual(view.requestIds, []);              // empty ids (cache hits) are not shown
  assert.equal(resultView({ images: [] }), null);
  assert.equal(resultView(undefined), null);
  assert.equal(resultView({ fal_urls: "https://x.y/z.png" }).urls.length, 1);
});

test("key rows and choices", () => {
  assert.equal(keyLabel({ name: "work", hint: "…9f2c" }), "work …9f2c");
  assert.equal(keyLabel({ name: "work" }), "work");
  assert.deepEqual(keyChoices(["work", "home", "work"]), [ENV_CHOICE, "home", "work"]);
  assert.deepEqual(keyChoices([]), [ENV_CHOICE]);
});

test("key test answers read as one sentence", () => {
  assert.deepEqual(
    keyTestLine({ name: "work", result: "valid", message: "fal accepted the key (rest.fal.ai answered 200)" }),
    { tone: "ok", text: "'work' is valid: fal accepted the key (rest.fal.ai answered 200)." });
  assert.equal(keyTestLine({ name: "old", result: "rejected", message: "fal rejected the key" }).tone, "bad");
  const unreachable = keyTestLine({ name: ENV_CHOICE, result: "unreachable", message: "rest.fal.ai\ncould not be reached" });
  assert.equal(unreachable.tone, "warn");
  assert.equal(unreachable.text, "FAL_KEY is not checked: rest.fal.ai could not be reached.");
});

test("route errors become one sentence", () => {
  assert.equal(errorLine(400, { error: "the key is empty; paste the key" }), "the key is empty; paste the key.");
  assert.equal(errorLine(403, { error: "refused: x." }), "refused: x.");
  assert.match(errorLine(404, null), /restart ComfyUI/);
  assert.match(errorLine(0, null), /could not be reached/);
  assert.match(errorLine(500, "oops"), /answered 500/);
});
