import { test } from "node:test";
import assert from "node:assert/strict";
import { createFrontend, PROGRESS_TEXT_WIDGET } from "../lib/frontend.js";

// Small stand-ins for the parts of ComfyUI's front end the adapter reads.
function fakeDoc() {
  const doc = {
    elements: {},
    clicked: [],
    querySelector(selector) {
      return this.elements[selector] ?? null;
    },
    querySelectorAll() {
      return this.options ?? [];
    },
  };
  return doc;
}

test("settings on 1.27: showSettingsDialog(category) opens the fal page", async () => {
  const doc = fakeDoc();
  const calls = [];
  const app = { extensionManager: { dialog: { showSettingsDialog: (c) => {
    calls.push(c);
    doc.elements[".fal-keys"] = {};
  } } } };
  const fe = createFrontend({ app, doc });
  assert.equal(await fe.openSettings("fal", { ready: ".fal-keys", timeoutMs: 50, stepMs: 5 }), true);
  assert.deepEqual(calls, ["fal"]);
});

test("settings on 1.58: no showSettingsDialog; the command opens it and the fal entry is clicked", async () => {
  const doc = fakeDoc();
  const commands = [];
  const falEntry = { click() { doc.elements[".fal-keys"] = {}; } };
  const app = { extensionManager: {
    dialog: {},
    command: { execute: async (id) => {
      commands.push(id);
      doc.elements['[data-nav-id$="/fal"]'] = falEntry;
    } },
  } };
  const fe = createFrontend({ app, doc });
  assert.equal(await fe.openSettings("fal", { ready: ".fal-keys", timeoutMs: 50, stepMs: 5 }), true);
  assert.deepEqual(commands, ["Comfy.ShowSettingsDialog"]);
});

test("settings on 1.27 layout: the category is a listbox option found by its text", async () => {
  const doc = fakeDoc();
  const app = { extensionManager: { command: { execute: async () => {
    doc.options = [{ textContent: " Comfy " }, { textContent: "fal", click() { doc.elements[".fal-keys"] = {}; } }];
  } } } };
  const fe = createFrontend({ app, doc });
  assert.equal(await fe.openSettings("fal", { ready: ".fal-keys", timeoutMs: 50, stepMs: 5 }), true);
});

test("settings that cannot be opened report false (the caller tells the user)", async () => {
  const fe = createFrontend({ app: { extensionManager: {} }, doc: fakeDoc() });
  assert.equal(await fe.openSettings("fal", { ready: ".fal-keys", timeoutMs: 20, stepMs: 5 }), false);
  // The dialog opens but the page never shows up.
  const opened = createFrontend({ app: { extensionManager: { command: { execute: async () => {} } } }, doc: fakeDoc() });
  assert.equal(await opened.openSettings("fal", { ready: ".fal-keys", timeoutMs: 20, stepMs: 5 }), false);
});

test("notify: the front end's toast, else an alert", () => {
  const toasts = [];
  const fe = createFrontend({ app: { extensionManager: { toast: { add: (t) => toasts.push(t) } } } });
  assert.equal(fe.notify("warn", "No page", "Open settings."), "toast");
  assert.equal(toasts[0].severity, "warn");
  assert.equal(toasts[0].detail, "Open settings.");
  const alerts = [];
  const bare = createFrontend({ app: {}, win: { alert: (text) => alerts.push(text) } });
  assert.equal(bare.notify("warn", "No page", "Open settings."), "alert");
  assert.deepEqual(alerts, ["No page\n\nOpen settings."]);
});

test("watchWidget: typing (callback), loading (value set) and configure all reach the watcher", () => {
  const fe = createFrontend({ app: {} });
  const typed = [];
  const widget = { name: "colors", value: "#111111", callback(v) { typed.push(v); } };
  const node = { widgets: [widget] };
  const seen = [];
  fe.watchWidget(node, widget, (value) => seen.push(value));
  assert.deepEqual(seen, ["#111111"]);           // the value it starts with
  widget.value = "#222222";                       // workflow load / paste / undo
  widget.callback("#222222");                     // the Vue edit path: no repeat for the same value
  assert.deepEqual(seen, ["#111111", "#222222"]);
  assert.deepEqual(typed, ["#222222"]);           // the original callback still runs
  widget.value = "#333333";
  assert.equal(widget.value, "#333333");
  node.onConfigure?.({});
  assert.deepEqual(seen, ["#111111", "#222222", "#333333"]);
});

test("watchWidget keeps a widget's own value accessor (1.5x widgets are classes)", () => {
  class Widget {
    constructor() { this.stored = "a"; this.name = "colors"; }
    get value() { return this.stored; }
    set value(v) { this.stored = String(v).trim(); }
  }
  const widget = new Widget();
  const seen = [];
  createFrontend({ app: {} }).watchWidget({ widgets: [widget] }, widget, (v) => seen.push(v));
  widget.value = "  b ";
  assert.equal(widget.value, "b");
  assert.equal(widget.stored, "b");
  assert.deepEqual(seen, ["a", "b"]);
});

test("setComboValues changes the list in place: a dropdown holding the old array sees it", () => {
  const fe = createFrontend({ app: {} });
  const values = ["environment FAL_KEY"];
  const widget = { options: { values } };
  const heldByDropdown = widget.options.values;
  assert.equal(fe.setComboValues(widget, ["environment FAL_KEY", "work"]), true);
  assert.deepEqual(heldByDropdown, ["environment FAL_KEY", "work"]);
  assert.equal(widget.options.values, values);
  assert.equal(fe.setComboValues(null, ["x"]), false);
});

test("nodesOfType looks into subgraphs too", () => {
  const root = { _nodes: [{ type: "FalKey", id: 1 }, { type: "Other", id: 2 }] };
  root.subgraphs = new Map([["s", { nodes: [{ type: "FalKey", id: 3 }] }]]);
  const fe = createFrontend({ app: { graph: root } });
  assert.deepEqual(fe.nodesOfType("FalKey").map((n) => n.id), [1, 3]);
});

test("removeProgressText drops ComfyUI's progress text widget only", () => {
  const fe = createFrontend({ app: {} });
  let removed = 0;
  const node = { widgets: [{ name: "prompt" }, { name: PROGRESS_TEXT_WIDGET, onRemove: () => removed++ },
    { name: "fal_result" }] };
  assert.equal(fe.removeProgressText(node), true);
  assert.deepEqual(node.widgets.map((w) => w.name), ["prompt", "fal_result"]);
  assert.equal(removed, 1);
  assert.equal(fe.removeProgressText(node), false);
});

test("measuredBox: Nodes 2.0 measures the node's element; classic has none (pos and size are used)", () => {
  const rect = { left: 300, top: 150, right: 1100, bottom: 1150, width: 800, height: 1000 };
  const element = { getBoundingClientRect: () => rect, children: [] };
  const doc = fakeDoc();
  doc.elements['[data-node-id="7"]'] = element;
  let vue = true;
  const app = { canvas: { ds: { scale: 2, offset: [0, 0] }, canvas: { getBoundingClientRect: () => ({ left: 100, top: 50 }) } },
    extensionManager: { setting: { get: () => vue } } };
  const fe = createFrontend({ app, doc });
  const node = { id: 7, size: [400, 300] };
  assert.deepEqual(fe.measuredBox(node), { id: 7, left: 100, right: 500, top: 50, bottom: 550 });
  vue = false;
  assert.equal(fe.measuredBox(node), null);
});

test("execution errors and refused prompts reach the callbacks", async () => {
  const listeners = {};
  const refusal = Object.assign(new Error("Prompt execution failed"),
    { response: { node_errors: { 5: { errors: [{ type: "custom_validation_failed" }] } } } });
  let refuse = true;
  const api = {
    addEventListener: (type, fn) => ((listeners[type] ??= []).push(fn)),
    async queuePrompt(number) {
      if (refuse) throw refusal;
      return { prompt_id: "p", number };
    },
  };
  const fe = createFrontend({ app: {}, api });
  const failures = [];
  fe.onExecutionError((id, sentence) => failures.push([id, sentence]));
  listeners.execution_error[0]({ detail: { node_id: 12, exception_message: "fal Sharpen: no key. " } });
  listeners.execution_error[0]({ detail: { exception_message: "no node" } });
  assert.deepEqual(failures, [["12", "fal Sharpen: no key."]]);
  const checked = [];
  assert.equal(fe.onPromptChecked((errors) => checked.push(Object.keys(errors))), true);
  await assert.rejects(api.queuePrompt(0), refusal);      // the front end still gets the refusal
  refuse = false;
  assert.deepEqual(await api.queuePrompt(1), { prompt_id: "p", number: 1 });
  assert.deepEqual(checked, [["5"], []]);
});

test("refreshBadges bumps the version the badge functions read (Nodes 2.0 recomputes its chips on it)", () => {
  const store = {};
  const fe = createFrontend({ app: { extensionManager: store } });
  assert.equal(fe.badgeVersion(), 0);
  fe.refreshBadges({});
  fe.refreshBadges();
  assert.equal(fe.badgeVersion(), 2);
  assert.equal(store.falBadgeVersion, 2);
  assert.equal(createFrontend({ app: {} }).badgeVersion(), 0);   // no store: nothing to bump
});
