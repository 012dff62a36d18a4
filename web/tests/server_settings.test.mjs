import { test } from "node:test";
import assert from "node:assert/strict";
import {
  addServer, changedSettings, NUMBER_FIELDS, parseNumberField, parseServerUrl, removeServer,
  serverSettingsError,
} from "../lib/server_settings.js";

const field = (name) => NUMBER_FIELDS.find((f) => f.name === name);

test("the three ceilings the server has", () => {
  assert.deepEqual(NUMBER_FIELDS.map((f) => f.name), ["max_usd_per_prompt", "max_usd_per_day", "cache_max_gb"]);
});

test("numbers: decimal comma accepted, below the minimum or not a number refused", () => {
  assert.deepEqual(parseNumberField(field("max_usd_per_day"), " 12,5 "), { value: 12.5 });
  assert.deepEqual(parseNumberField(field("max_usd_per_prompt"), "0"), { value: 0 });
  assert.match(parseNumberField(field("max_usd_per_prompt"), "-1").error, /at least 0/);
  assert.match(parseNumberField(field("cache_max_gb"), "0").error, /at least 0.1/);
  assert.match(parseNumberField(field("cache_max_gb"), "lots").error, /type a number/);
  assert.match(parseNumberField(field("cache_max_gb"), "").error, /type a number/);
});

test("server URLs: http(s) only, no credentials, a trailing slash", () => {
  assert.deepEqual(parseServerUrl(" http://127.0.0.1:8765 "), { url: "http://127.0.0.1:8765/" });
  assert.deepEqual(parseServerUrl("https://proxy.example/fal"), { url: "https://proxy.example/fal/" });
  assert.match(parseServerUrl("ftp://x/").error, /http:\/\/ or https:\/\//);
  assert.match(parseServerUrl("127.0.0.1:8765").error, /http/);
  assert.match(parseServerUrl("http://user:pw@x/").error, /password/);
  assert.match(parseServerUrl("").error, /Type a server URL/);
});

test("allowed servers: add once, remove by position", () => {
  const list = addServer(["http://a/"], "http://b/");
  assert.deepEqual(list, ["http://a/", "http://b/"]);
  assert.deepEqual(addServer(list, "http://a/"), list);
  assert.deepEqual(removeServer(list, 0), ["http://b/"]);
  assert.deepEqual(removeServer(list, 5), list);
  assert.deepEqual(addServer(undefined, "http://a/"), ["http://a/"]);
});

test("only changed fields are sent", () => {
  const saved = { allowed_servers: ["http://a/"], max_usd_per_prompt: 5, cache_max_gb: 2 };
  assert.deepEqual(changedSettings(saved, { max_usd_per_prompt: 5, cache_max_gb: 3 }), { cache_max_gb: 3 });
  assert.deepEqual(changedSettings(saved, { allowed_servers: ["http://a/"] }), {});
  assert.deepEqual(changedSettings(saved, { allowed_servers: [] }), { allowed_servers: [] });
});

test("errors: the server's sentence, a missing route on an older pack, no answer", () => {
  assert.equal(serverSettingsError(400, { error: "`cache_max_gb` must be a number from 0.1 to 10000" }),
    "`cache_max_gb` must be a number from 0.1 to 10000.");
  assert.match(serverSettingsError(404, null), /no server settings yet.*update the pack and restart ComfyUI/);
  assert.match(serverSettingsError(0, null), /could not be reached/);
  assert.match(serverSettingsError(500, {}), /answered 500/);
});
