import { test } from "node:test";
import assert from "node:assert/strict";
import { IMAGE_SOCKETS, socketStates } from "../lib/sockets.js";

test("item 6: sockets an endpoint has no field for are marked unused, with why", () => {
  // GET /fal/catalogue/fal-ai/post-processing/sharpen: one image field.
  const sharpen = socketStates({ id: "fal-ai/post-processing/sharpen", sockets: { image_url: ["image"] } });
  assert.deepEqual(Object.keys(sharpen), IMAGE_SOCKETS);
  assert.equal(sharpen.image.used, true);
  for (const name of ["image_2", "image_3", "image_4", "mask"]) {
    assert.equal(sharpen[name].used, false);
    assert.equal(sharpen[name].label, `${name} (unused)`);
    assert.match(sharpen[name].tooltip, /fal-ai\/post-processing\/sharpen has no field for/);
  }
  // Seedream: four images into one list; no mask.
  const seedream = socketStates({ id: "s", sockets: { image_urls: ["image", "image_2", "image_3", "image_4"] } });
  assert.deepEqual(IMAGE_SOCKETS.filter((n) => seedream[n].used), ["image", "image_2", "image_3", "image_4"]);
  assert.equal(seedream.image_3.tooltip, "goes to image_urls");
  // No schema (an unknown endpoint): nothing is greyed, the run says what is wrong.
  assert.ok(Object.values(socketStates(null, "x/y")).every((s) => s.used && !s.label));
});
