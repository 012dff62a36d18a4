// The Recraft node's `colors` text gets swatches (click one to remove it) and a colour
// picker. The text stays the source of truth (lib/colors.js), so a workflow loads the same
// without this extension.
import { el } from "./dom.js";
import { addColor, labelColor, parseColors, removeColor } from "./lib/colors.js";

export const RECRAFT_NODE = "FalRecraftV3ImageToImage";
const COLORS_WIDGET = "colors";
const DEFAULT_PICK = "#ff8800";

export const SWATCHES_STYLE = `
.fal-swatches { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; padding: 2px 4px; font-size: 11px; }
.fal-swatch { width: 22px; height: 22px; border-radius: 4px; cursor: pointer; border: 1px solid rgba(255,255,255,.35);
  display: inline-flex; align-items: center; justify-content: center; font-size: 12px; box-sizing: border-box; }
.fal-swatch:hover::after { content: "×"; }
.fal-swatch-bad { background: repeating-linear-gradient(45deg,#a33,#a33 4px,#622 4px,#622 8px); color: #fff; }
.fal-swatch-add { position: relative; overflow: hidden; background: transparent; border-style: dashed; color: var(--fg-color, #ddd); }
.fal-swatch-add:hover::after { content: none; }
.fal-swatch-add input { position: absolute; inset: 0; opacity: 0; cursor: pointer; width: 100%; height: 100%; border: 0; padding: 0; }
.fal-swatches-label { opacity: .6; margin-right: 2px; }
`;

/** Adds the swatches under the node's `colors` text; returns their box (null: no such widget). */
export function addSwatches(frontend, node) {
  const text = frontend.findWidget(node, COLORS_WIDGET);
  if (!text) return null;
  const box = el("div", { class: "fal-swatches" });
  let shown = null;

  const setText = (value) => {
    text.value = value;     // the watcher below redraws the swatches
    text.callback?.(value, frontend.canvas(), node);
    frontend.redraw(node);
    frontend.graphChanged();
  };

  function render() {
    shown = String(text.value ?? "");
    const entries = parseColors(shown);
    const swatches = entries.map((entry, i) => {
      const swatch = el("span", {
        class: entry.hex ? "fal-swatch" : "fal-swatch fal-swatch-bad",
        title: entry.hex ? `${entry.text}: click to remove` : `'${entry.text}' is not a colour: click to remove`,
        style: entry.hex ? { background: entry.hex, color: labelColor(entry.hex) } : {},
      }, entry.hex ? "" : "?");
      swatch.addEventListener("click", (event) => {
        event.stopPropagation();
        setText(removeColor(shown, i));
      });
      return swatch;
    });
    const picker = el("input", { type: "color", value: entries.at(-1)?.hex ?? DEFAULT_PICK, title: "add a colour" });
    picker.addEventListener("change", () => setText(addColor(String(text.value ?? ""), picker.value)));
    const add = el("span", { class: "fal-swatch fal-swatch-add", title: "add a colour" }, "+", picker);
    box.replaceChildren(el("span", { class: "fal-swatches-label" }, "colours"), ...swatches, add);
  }

  frontend.addDomWidget(node, "colors_swatches", "fal_swatches", box, {
    getMinHeight: () => 32,
    getMaxHeight: () => 80,
  });

  // Follow the text however it changes: typing, paste, undo, loading a workflow (never
  // from canvas drawing, which Nodes 2.0 does not call).
  frontend.watchWidget(node, text, () => {
    if (String(text.value ?? "") !== shown) render();
  });
  return box;
}
