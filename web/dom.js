// Small DOM helpers shared by the front-end modules. They use the global `document` at call
// time, so the Node tests run them against web/tests/fake_dom.mjs.

/** el("div", {class, style: {...}, onclick, title}, ...children): one element. */
export function el(tag, props = {}, ...children) {
  const node = globalThis.document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "object" ? child : globalThis.document.createTextNode(String(child)));
  }
  return node;
}

/** Adds a module's CSS to the page once (`id` names it). */
export function addStyle(id, css) {
  const doc = globalThis.document;
  if (doc.getElementById?.(id)) return;
  doc.head.append(el("style", { id }, css));
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Plain http on a LAN address is not a secure context: no async clipboard there.
    const area = el("textarea", { style: { position: "fixed", opacity: "0" } });
    area.value = text;
    globalThis.document.body.append(area);
    area.select();
    const ok = globalThis.document.execCommand("copy");
    area.remove();
    return ok;
  }
}

/** A small button that copies `text` (or what text() gives when clicked) and says whether it worked. */
export function copyButton(text, title = "copy", label = "copy") {
  const button = el("button", { class: "fal-mini", title, type: "button" }, label);
  button.addEventListener("click", async (event) => {
    event.stopPropagation?.();
    button.textContent = (await copyText(typeof text === "function" ? text() : text)) ? "copied" : "failed";
    setTimeout(() => (button.textContent = label), 1200);
  });
  return button;
}

/** A status line's say(text, tone): tone "ok" | "bad" | "warn" | "". */
export function sayer(message) {
  return (text, tone = "") => {
    message.className = `fal-keys-msg ${tone ? "fal-" + tone : ""}`;
    message.textContent = text;
  };
}

/** Shared look of the pack's panels (buttons, rows, status colours). */
export const SHARED_STYLE = `
.fal-keys-row { display: flex; align-items: center; gap: 8px; padding: 4px 6px; border-radius: 6px;
  background: var(--comfy-input-bg, #222); }
.fal-keys-empty { opacity: .7; font-style: italic; }
.fal-keys-add { display: flex; gap: 6px; align-items: center; }
.fal-keys-add input { min-width: 0; padding: 4px 6px; border-radius: 4px; border: 1px solid var(--border-color, #555);
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); }
.fal-keys-msg { min-height: 1.2em; }
.fal-keys-note { opacity: .7; font-size: 12px; }
.fal-ok { color: #5fcf80; } .fal-bad { color: #f07070; } .fal-warn { color: #e8b450; }
.fal-mini { padding: 2px 8px; border-radius: 4px; cursor: pointer; font-size: 12px;
  border: 1px solid var(--border-color, #555); background: var(--comfy-menu-bg, #333); color: var(--fg-color, #ddd); }
.fal-mini:disabled { opacity: .5; cursor: default; }
.fal-result-id { font-family: monospace; opacity: .8; }
`;
