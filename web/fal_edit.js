// comfyui-fal-edit front end: registers the feature modules with ComfyUI.
//  - keys.js            Settings → fal → Keys, and the fal Key node's list
//  - server_settings.js Settings → fal → Server (the server in force, allowed servers, ceilings)
//  - spend.js           "fal: spend this session" (command, menu, settings section)
//  - result_panel.js    after a run: status, result URLs, request ids; or the failure sentence
//  - badges.js          the price chip on every fal node
//  - swatches.js        the Recraft node's colour swatches
//  - layout.js          who moves when a fal node grows (classic canvas and Nodes 2.0)
//  - endpoint_form.js   fal Image Endpoint's form (its own extension)
// Their pure rules are in lib/ (the same names), checked by `node --test web/tests/`.
// Every front-end API goes through lib/frontend.js (one fallback per generation).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { createPriceBadges } from "./badges.js";
import { addStyle, SHARED_STYLE } from "./dom.js";
import { keyPanel, KEYS_STYLE } from "./keys.js";
import { createLayout } from "./layout.js";
import { createFrontend } from "./lib/frontend.js";
import { createResultPanel, RESULT_STYLE } from "./result_panel.js";
import { createRoutes } from "./routes.js";
import { SERVER_STYLE, serverSettingsPanel } from "./server_settings.js";
import { openSpendDialog, SPEND_STYLE, spendPanel } from "./spend.js";
import { addSwatches, RECRAFT_NODE, SWATCHES_STYLE } from "./swatches.js";

const EXTENSION = "comfyui-fal-edit";
const FAL_CATEGORY = "fal/";
const SPEND_NODE = "FalSpend";   // its report shows in its body (result_panel.js)

const frontend = createFrontend({ app, api });
const routes = createRoutes(frontend);
const layout = createLayout(frontend);
const results = createResultPanel({ frontend, layout });
const badges = createPriceBadges({ frontend, routes });
const spendOptions = { frontend, routes, prices: badges.answer };

/** The pack's nodes (fal Key and fal Settings too): their failures show in their body. */
function isPackNode(nodeData) {
  return String(nodeData?.category ?? "").startsWith(FAL_CATEGORY);
}

/** The nodes that call a fal endpoint (result panel, price chip). */
function isFalEndpoint(nodeData) {
  return isPackNode(nodeData) && (nodeData.output_name ?? []).includes("urls");
}

/** Run `extra` after a node method (ComfyUI's or another extension's); a failure in
 * `extra` is logged, never thrown into the graph. */
function extendMethod(proto, name, extra, failure) {
  const original = proto[name];
  proto[name] = function (...args) {
    const result = original?.apply(this, args);
    try {
      extra.apply(this, args);
    } catch (error) {
      console.warn(`[${EXTENSION}] ${failure}`, error);
    }
    return result;
  };
}

/** The pack's nodes of every graph (their failures show in their body). */
function packNodes() {
  return frontend.graphs().flatMap((graph) => frontend.nodesOf(graph)).filter((node) => node.falPack);
}

frontend.registerExtension({
  name: `${EXTENSION}.fal`,

  settings: [
    {
      id: "fal.Keys",
      category: ["fal", "Keys", "Saved keys"],
      name: "fal keys on this server",
      tooltip: "Add a named fal key, test it, delete it. The key is kept on the ComfyUI server in a " +
        "private file, never in ComfyUI's settings; workflows carry only its name.",
      type: () => keyPanel({ frontend, routes, onKeyAdded: badges.load }),
      defaultValue: "",
    },
    {
      id: "fal.Spend",
      category: ["fal", "Spend", "This session"],
      name: "fal calls this session",
      tooltip: "Every fal call since ComfyUI started: billed or answered from the cache, with its " +
        "estimated cost. The fal Spend node gives the same report as text.",
      type: () => spendPanel({ ...spendOptions, compact: true }),
      defaultValue: "",
    },
    {
      id: "fal.ServerSettings",
      category: ["fal", "Server", "Owner settings"],
      name: "What workflows on this server may do",
      tooltip: "Decided here, on the server: where fal calls go, which servers may receive your fal " +
        "key and how much fal may cost. No workflow can change these.",
      type: () => serverSettingsPanel({ routes }),
      defaultValue: "",
    },
  ],

  commands: [
    {
      id: "fal.ManageKeys",
      label: "fal: manage keys",
      icon: "pi pi-key",
      function: async () => {
        if (await frontend.openSettings("fal", { ready: ".fal-keys" })) return;
        frontend.notify("warn", "The fal settings page could not be opened",
          "Open ComfyUI's settings (the gear) and pick \"fal\" to manage your fal keys.");
      },
    },
    {
      id: "fal.Spend",
      label: "fal: spend this session",
      icon: "pi pi-dollar",
      function: () => {
        openSpendDialog(spendOptions);
      },
    },
  ],

  menuCommands: [{ path: ["Extensions", "fal"], commands: ["fal.ManageKeys", "fal.Spend"] }],

  async setup() {
    addStyle("comfyui-fal-edit-style",
      [SHARED_STYLE, KEYS_STYLE, RESULT_STYLE, SWATCHES_STYLE, SPEND_STYLE, SERVER_STYLE].join("\n"));
    frontend.onExecuting((id) => {
      if (id === null) return;
      const node = frontend.getNodeById(id);
      if (!node?.falPack) return;
      results.startRun(node);
      layout.rememberBase(node);
    });
    // ComfyUI adds its progress text to the node: grow it so the other widgets keep their
    // size (after the front end's own handler has added the text).
    frontend.onProgressText((id) => {
      const node = frontend.getNodeById(id);
      if (node?.falEndpoint) setTimeout(() => layout.fitNode(node), 0);
    });
    // A failure: the pack's sentence in the node's body, in every front end.
    frontend.onExecutionError((id, sentence) => {
      const node = frontend.getNodeById(id);
      if (!node?.falPack || !sentence) return;
      results.showRunFailure(node, sentence);
    });
    frontend.onPromptChecked((nodeErrors) => results.showPromptErrors(packNodes(), nodeErrors));
    badges.load();
    // endpoint_form.js: fal Image Endpoint's endpoint changed and its price was asked for.
    window.addEventListener("fal:prices-changed", () => badges.load());
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const proto = nodeType.prototype;
    if (isPackNode(nodeData)) proto.falPack = true;
    if (nodeData?.name === RECRAFT_NODE) {
      extendMethod(proto, "onNodeCreated", function () {
        addSwatches(frontend, this);
      }, "colour swatches unavailable");
    }
    if (nodeData?.name === SPEND_NODE) {
      extendMethod(proto, "onExecuted", function (output) {
        results.showReport(this, output);
      }, "could not show the spend report");
    }
    if (isFalEndpoint(nodeData)) {
      proto.falEndpoint = true;
      extendMethod(proto, "onExecuted", function (output) {
        results.showResult(this, output);
        badges.noteRun(this, output);
      }, "could not show the result");
      extendMethod(proto, "onNodeCreated", function () {
        badges.addPriceBadge(this);
      }, "price badge unavailable");
      extendMethod(proto, "onNodeCreated", function () {
        // A new fal node starts with its seed fixed: the same inputs then cost nothing
        // the second time (result cache), and a rerun after a partial failure pays only
        // for the failed items. A loaded workflow's own choice is applied after this.
        const control = this.widgets?.find((w) => w.name === "control_after_generate");
        if (control) control.value = "fixed";
      }, "could not fix the seed");
    }
  },
});
