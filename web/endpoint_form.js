// fal Image Endpoint's typed form: under the node, one control per field of the chosen
// endpoint (numbers with fal's ranges, dropdowns for enums, toggles, text areas; fal's
// defaults as placeholders, descriptions as tooltips). The form reads and writes the node's
// `arguments` text, which stays what the workflow saves: without this extension, typing
// JSON works the same. The schema comes from GET /fal/catalogue/{id} (a local file on the
// server). Works in classic and Nodes 2.0 mode: a DOM widget, and widget callbacks only.
// Every front-end API goes through lib/frontend.js, as in fal_edit.js.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { createLayout } from "./layout.js";
import { createFrontend } from "./lib/frontend.js";
import {
  domWidgetHeight, FORM_EMPTY_PX, FORM_GAP_PX, FORM_NOTE_LINE_PX, FORM_PADDING_PX, FORM_ROW_PX, FORM_TEXTAREA_PX,
  formHeight,
} from "./lib/layout.js";
import {
  describeFields, displayValue, parseControl, readArguments, unknownFields, writeArgument,
} from "./lib/schema_form.js";
import { socketStates } from "./lib/sockets.js";

const frontend = createFrontend({ app, api });
const layout = createLayout(frontend);

const EXTENSION = "comfyui-fal-edit";
const NODE = "FalImageEndpoint";
const schemas = new Map();   // endpoint id -> Promise of the catalogue entry

const STYLE = `
.fal-form { display: flex; flex-direction: column; gap: ${FORM_GAP_PX}px; font-size: 12px; padding: ${FORM_PADDING_PX / 2}px 4px;
  overflow-y: auto; box-sizing: border-box; }
.fal-form-row { display: grid; grid-template-columns: minmax(90px, 38%) 1fr; gap: 6px; align-items: center;
  height: ${FORM_ROW_PX}px; flex-shrink: 0; }
.fal-form-row.fal-form-tall { height: ${FORM_TEXTAREA_PX}px; }
.fal-form-row label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; opacity: .85; }
.fal-form-row label.fal-required::after { content: " *"; color: #e0a050; }
.fal-form input, .fal-form select, .fal-form textarea { min-width: 0; width: 100%; box-sizing: border-box;
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); border: 1px solid var(--border-color, #555);
  border-radius: 4px; padding: 2px 4px; font-size: 12px; }
.fal-form input[type=checkbox] { width: auto; justify-self: start; }
.fal-form input, .fal-form select { height: ${FORM_ROW_PX}px; }
.fal-form textarea { resize: none; height: ${FORM_ROW_PX}px; }
.fal-form .fal-form-tall textarea { height: ${FORM_TEXTAREA_PX}px; }
.fal-form .fal-bad { border-color: #c04040; }
.fal-form-note { opacity: .75; font-style: italic; line-height: ${FORM_NOTE_LINE_PX}px; flex-shrink: 0; }
.fal-form-error { color: #e07070; line-height: ${FORM_NOTE_LINE_PX}px; flex-shrink: 0; }
.fal-form-image { opacity: .7; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
`;

function schemaFor(endpointId) {
  if (!schemas.has(endpointId)) {
    schemas.set(endpointId, frontend.fetchApi(`/fal/catalogue/${endpointId}`)
      .then((r) => (r.ok ? r.json() : null)).catch(() => null));
    // The price badge asks fal's price list for this endpoint (once per session, server-side).
    frontend.fetchApi(`/fal/prices?endpoint_id=${encodeURIComponent(endpointId)}`)
      .then(() => window.dispatchEvent(new CustomEvent("fal:prices-changed")))
      .catch(() => null);
  }
  return schemas.get(endpointId);
}

function make(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function control(field, value, onChange) {
  const shown = displayValue(field, value);
  const title = field.tooltip || undefined;
  let input;
  switch (field.control) {
    case "image":
      return make("span", { class: "fal-form-image", title }, value ? "set in the JSON" : field.placeholder);
    case "enum":
      input = make("select", { title },
        make("option", { value: "" }, field.placeholder || "fal default"),
        ...field.options.map((o, i) => make("option", { value: String(i) }, String(o))));
      input.value = shown;
      input.addEventListener("change", () => onChange(input.value, input));
      return input;
    case "boolean":
      input = make("input", { type: "checkbox", title });
      input.checked = shown;
      input.addEventListener("change", () => onChange(input.checked, input));
      return input;
    case "integer":
    case "number":
      input = make("input", { type: "number", title, placeholder: field.placeholder,
        min: field.min, max: field.max, step: field.step });
      input.value = shown;
      input.addEventListener("change", () => onChange(input.value, input));
      return input;
    case "textarea":
    case "json":
      input = make("textarea", { title, placeholder: field.placeholder, rows: field.control === "json" ? 1 : 2 });
      input.value = shown;
      input.addEventListener("change", () => onChange(input.value, input));
      return input;
    default:
      input = make("input", { type: "text", title, placeholder: field.placeholder });
      input.value = shown;
      input.addEventListener("change", () => onChange(input.value, input));
      return input;
  }
}

/** Image sockets the endpoint has no field for are greyed out and say so (both canvases
 * draw a slot's label and colour); they stay, so links and saved workflows keep their slots. */
function showSockets(node, entry, endpoint) {
  const states = socketStates(entry, endpoint);
  for (const slot of node.inputs ?? []) {
    const state = states[slot.name];
    if (!state) continue;
    if (state.used) {
      if (slot.falGreyed) {
        delete slot.label;
        delete slot.color_off;
        slot.falGreyed = false;
      }
    } else {
      slot.label = state.label;
      slot.color_off = "#3a3a3a";
      slot.falGreyed = true;
    }
    slot.falTooltip ??= slot.tooltip ?? "";
    slot.tooltip = state.used ? slot.falTooltip : state.tooltip;
  }
  frontend.redraw(node);
}

function addForm(node) {
  const endpointWidget = frontend.findWidget(node, "endpoint");
  const argsWidget = frontend.findWidget(node, "arguments");
  if (!endpointWidget || !argsWidget) return;
  const box = make("div", { class: "fal-form" });
  // The form's full height (lib/layout.js formHeight): the classic canvas gives a DOM widget
  // its minimum, so the minimum is the whole form (one row was all it showed).
  let height = FORM_EMPTY_PX;
  // Not in widgets_values: workflows load (and `arguments` works) without this extension.
  frontend.addDomWidget(node, "fal_form", "fal_form", box, {
    getMinHeight: () => domWidgetHeight(height),
    getMaxHeight: () => domWidgetHeight(height),
  });
  let rendered = { endpoint: null, text: null };
  let writing = false;

  function write(name, value) {
    const text = writeArgument(argsWidget.value, name, value);
    if (text === null) return false;
    writing = true;
    try {
      argsWidget.value = text;
      argsWidget.callback?.(text);
    } finally {
      writing = false;
    }
    rendered.text = text;
    frontend.redraw(node);
    return true;
  }

  async function render(force = false) {
    const endpoint = String(endpointWidget.value ?? "");
    const text = String(argsWidget.value ?? "");
    if (!force && rendered.endpoint === endpoint && rendered.text === text) return;
    rendered = { endpoint, text };
    const entry = await schemaFor(endpoint);
    if (rendered.endpoint !== endpoint) return;   // the user picked another meanwhile
    showSockets(node, entry, endpoint);
    if (!entry) {
      const note = `no schema for ${endpoint}; type JSON in arguments`;
      box.replaceChildren(make("div", { class: "fal-form-note" }, note));
      fit([{ note }]);
      return;
    }
    const read = readArguments(text);
    const rows = [];
    const notes = [];
    const error = (note) => {
      notes.push({ note });
      rows.push(make("div", { class: "fal-form-error" }, note));
    };
    if (entry.retired) {
      // Gone from fal's published types: fal may no longer serve it (a run then says so).
      error(`not in fal's newest published types (${entry.retired}); if fal retired it, try ${entry.alternatives.join(", ") || "another endpoint"}`);
    }
    if (!read.ok) {
      error(`${read.error}; the form waits until it is valid JSON`);
    } else {
      const unknown = unknownFields(entry, read.values);
      if (unknown.length) error(`not a field of this endpoint: ${unknown.join(", ")}`);
    }
    const fields = describeFields(entry);
    for (const field of fields) {
      const value = read.ok ? read.values[field.name] : undefined;
      const input = control(field, value, (raw, element) => {
        const parsed = parseControl(field, raw);
        element.classList.toggle("fal-bad", Boolean(parsed.error));
        element.title = parsed.error || field.tooltip;
        if (!parsed.error) write(field.name, parsed.value);
      });
      if (!read.ok && input.disabled !== undefined) input.disabled = true;
      rows.push(make("div", { class: field.control === "textarea" ? "fal-form-row fal-form-tall" : "fal-form-row" },
        make("label", { class: field.required ? "fal-required" : undefined, title: field.tooltip || field.name }, field.name),
        input));
    }
    box.replaceChildren(...rows);
    fit([...notes, ...fields]);
  }

  /** The form shows at full size: the node grows to hold it and makes room below. */
  function fit(sizing) {
    height = formHeight(sizing);
    box.style.height = `${height}px`;
    layout.fitNode(node);
  }

  // Follow both widgets however they change: picking, typing, undo, a loaded workflow.
  for (const w of [endpointWidget, argsWidget]) {
    frontend.watchWidget(node, w, () => {
      if (!writing) render();
    });
  }
}

frontend.registerExtension({
  name: `${EXTENSION}.endpoint-form`,

  async setup() {
    document.head.append(make("style", { id: "comfyui-fal-edit-form-style" }, STYLE));
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const proto = nodeType.prototype;
    const created = proto.onNodeCreated;
    proto.onNodeCreated = function (...args) {
      const result = created?.apply(this, args);
      try {
        addForm(this);
      } catch (error) {
        console.warn(`[${EXTENSION}] endpoint form unavailable`, error);
      }
      return result;
    };
  },
});
