import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  describeFields, displayValue, parseControl, readArguments, unknownFields, writeArgument,
} from "../lib/schema_form.js";

// Real entries of the shipped catalogue, shaped as GET /fal/catalogue/{id} sends them.
const catalogue = JSON.parse(readFileSync(new URL("../../nodes/data/catalogue.json", import.meta.url)));
const entry = (id, sockets) => ({ id, ...catalogue.endpoints[id], sockets });
const SHARPEN = entry("fal-ai/post-processing/sharpen", { image_url: ["image"] });
const SEEDREAM = entry("fal-ai/bytedance/seedream/v4.5/edit",
  { image_urls: ["image", "image_2", "image_3", "image_4"] });
const BIREFNET = entry("fal-ai/birefnet", { image_url: ["image"] });

const byName = (fields) => Object.fromEntries(fields.map((f) => [f.name, f]));

test("fields come in fal's order with ranges, enums, defaults as placeholders, descriptions as tooltips", () => {
  const fields = describeFields(SHARPEN);
  assert.deepEqual(fields.map((f) => f.name).slice(0, 4), ["image_url", "sharpen_mode", "sharpen_radius", "sharpen_alpha"]);
  const f = byName(fields);
  assert.equal(f.image_url.control, "image");
  assert.match(f.image_url.placeholder, /from image/);
  assert.deepEqual([f.sharpen_alpha.control, f.sharpen_alpha.min, f.sharpen_alpha.max], ["number", 0.1, 5]);
  assert.deepEqual([f.sharpen_radius.control, f.sharpen_radius.step], ["integer", 1]);
  assert.deepEqual(f.sharpen_mode.options, ["basic", "smart", "cas"]);
  assert.equal(f.sharpen_mode.placeholder, 'fal default: "basic"');
  assert.equal(f.sharpen_alpha.tooltip, "Sharpen strength (for basic mode)");
  assert.equal(byName(describeFields(SEEDREAM)).prompt.control, "textarea");
  assert.equal(byName(describeFields(BIREFNET)).refine_foreground.control, "boolean");
});

test("round trip: what the form writes reads back the same, and only set fields are in the JSON", () => {
  const f = byName(describeFields(SHARPEN));
  let text = "{}";
  text = writeArgument(text, "sharpen_mode", parseControl(f.sharpen_mode, "1").value);
  text = writeArgument(text, "sharpen_alpha", parseControl(f.sharpen_alpha, "2.5").value);
  text = writeArgument(text, "sharpen_radius", parseControl(f.sharpen_radius, "3").value);
  assert.deepEqual(readArguments(text).values, { sharpen_mode: "smart", sharpen_alpha: 2.5, sharpen_radius: 3 });
  // Reloading the workflow shows the same values in the controls.
  const values = readArguments(text).values;
  assert.equal(displayValue(f.sharpen_mode, values.sharpen_mode), "1");
  assert.equal(displayValue(f.sharpen_alpha, values.sharpen_alpha), "2.5");
  assert.equal(displayValue(f.cas_amount, values.cas_amount), "");     // unset: placeholder shows
  // Clearing a control removes the field: fal's default applies.
  text = writeArgument(text, "sharpen_alpha", parseControl(f.sharpen_alpha, "").value);
  text = writeArgument(text, "sharpen_mode", parseControl(f.sharpen_mode, "").value);
  assert.deepEqual(readArguments(text).values, { sharpen_radius: 3 });
});

test("a toggle at fal's default sends nothing; away from it sends the value", () => {
  const f = byName(describeFields(BIREFNET)).refine_foreground;   // fal default: true
  assert.equal(displayValue(f, undefined), true);
  assert.equal(parseControl(f, false).value, false);
  assert.equal(parseControl(f, true).value, undefined);
  let text = writeArgument("{}", "refine_foreground", parseControl(f, false).value);
  assert.equal(text, '{\n  "refine_foreground": false\n}');
  text = writeArgument(text, "refine_foreground", parseControl(f, true).value);
  assert.equal(text, "{}");
});

test("text typed by hand is kept: other fields stay, invalid JSON is never overwritten", () => {
  const typed = '{"prompt": "a red hat", "my_note": 1}';
  const text = writeArgument(typed, "seed", 7);
  assert.deepEqual(Object.keys(readArguments(text).values), ["prompt", "my_note", "seed"]);
  assert.deepEqual(unknownFields(SEEDREAM, readArguments(text).values), ["my_note"]);
  assert.equal(writeArgument('{"prompt": "a red', "seed", 7), null);
  assert.equal(writeArgument("[1, 2]", "seed", 7), null);
  assert.match(readArguments('{"prompt": "a red').error, /not JSON/);
  assert.deepEqual(readArguments("").values, {});
});

test("out-of-range and malformed entries are refused by the control, not written", () => {
  const f = byName(describeFields(SHARPEN));
  assert.match(parseControl(f.sharpen_alpha, "7").error, /at most 5/);
  assert.match(parseControl(f.sharpen_radius, "1.5").error, /whole number/);
  assert.match(parseControl(f.sharpen_alpha, "abc").error, /not a number/);
  const list = { name: "loras", control: "json" };
  assert.deepEqual(parseControl(list, '[{"path": "x"}]').value, [{ path: "x" }]);
  assert.match(parseControl(list, "[oops").error, /not JSON/);
});

// Issue 22: each endpoint's own schema, not the type fal's types share between endpoints.
test("the form shows fal's own default and hint for object removal and Nano Banana Pro edit", () => {
  const removal = byName(describeFields(entry("fal-ai/image-editing/object-removal", { image_url: ["image"] })));
  assert.equal(removal.prompt.placeholder, 'fal default: "background people"');
  assert.equal(removal.prompt.tooltip, "Specify which objects to remove from the image.");
  const nano = byName(describeFields(entry("fal-ai/nano-banana-pro/edit",
    { image_urls: ["image", "image_2", "image_3", "image_4"] })));
  assert.equal(nano.system_prompt.control, "textarea");
  assert.equal(nano.system_prompt.placeholder, 'fal default: ""');
  assert.match(nano.system_prompt.tooltip, /^Optional system instruction that steers the model's persona/);
  assert.equal(nano.prompt.tooltip, "The prompt for image editing.");
});

test("a union takes each of fal's forms, typed as text or JSON, and says which they are", () => {
  const size = byName(describeFields(SEEDREAM)).image_size;
  assert.equal(size.control, "json");
  assert.match(size.tooltip, /fal takes an object \{"width": …, "height": …\} or one of "square_hd", "square"/);
  assert.deepEqual(parseControl(size, "square_hd"), { value: "square_hd" });
  assert.deepEqual(parseControl(size, '{"width": 1024, "height": 768}'), { value: { width: 1024, height: 768 } });
  assert.equal(displayValue(size, "square_hd"), "square_hd");
  assert.equal(displayValue(size, { width: 8, height: 8 }), '{"width":8,"height":8}');
});

test("an image inside an object or a list of objects names the socket that fills it", () => {
  const pulid = byName(describeFields(entry("fal-ai/pulid",
    { "reference_images[].image_url": ["image", "image_2", "image_3", "image_4"] })));
  assert.equal(pulid.reference_images.control, "json");
  assert.match(pulid.reference_images.socket,
    /^image, image_2, image_3, image_4 fill reference_images\[0\]\.image_url, reference_images\[1\]\.image_url, …/);
  const sd35 = byName(describeFields(entry("fal-ai/stable-diffusion-v35-large",
    { "controlnet.control_image_url": ["image"], "ip_adapter.image_url": ["image_2"] })));
  assert.equal(sd35.ip_adapter.socket, "image_2 fills ip_adapter.image_url");
  assert.match(sd35.ip_adapter.placeholder, /^image_2 fills ip_adapter\.image_url; the rest as JSON/);
});
