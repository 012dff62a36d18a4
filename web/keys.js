// Settings → fal → Keys: add a named fal key, see saved keys by name and last four
// characters, test one against fal, delete one (POST/GET/DELETE /fal/keys). The fal Key
// node's list follows those changes without reloading the page. Keys never pass through
// ComfyUI's settings store: the panel has no setting value.
import { el, sayer } from "./dom.js";
import { keyChoices, keyTestLine } from "./lib/format.js";

const KEY_NODE = "FalKey";
const KEY_WIDGET = "key_name";

export const KEYS_STYLE = `
.fal-keys { display: flex; flex-direction: column; gap: 8px; width: min(520px, 55vw); font-size: 13px; }
.fal-keys-name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.fal-keys-hint { font-family: monospace; opacity: .75; }
.fal-keys-buttons { display: flex; gap: 6px; justify-content: flex-end; width: 118px; }
.fal-keys-add input[name=name] { flex: 2; }
.fal-keys-add input[name=key] { flex: 3; font-family: monospace; }
`;

/** The fal Key nodes on the canvas and new ones offer the saved keys of `listing`. */
export async function refreshKeyChoices(frontend, listing) {
  const values = keyChoices((listing?.keys ?? []).map((k) => k.name));
  // Nodes already on the canvas (both modes: the list is changed in place).
  for (const node of frontend.nodesOfType(KEY_NODE)) {
    frontend.setComboValues(frontend.findWidget(node, KEY_WIDGET), values);
  }
  frontend.redraw();
  // The node definition, so new fal Key nodes offer the new list.
  try {
    await frontend.refreshNodeDef(KEY_NODE);
  } catch (error) {
    console.warn("[comfyui-fal-edit] could not refresh the fal Key node definition", error);
  }
}

/**
 * The keys panel. routes: web/routes.js; onKeyAdded(): a first key lets the server fetch
 * fal's price list. confirm(text) -> boolean (window.confirm in the browser).
 */
export function keyPanel({ frontend, routes, onKeyAdded = () => {}, confirm = (t) => globalThis.confirm(t) }) {
  const list = el("div", { class: "fal-keys-list" });
  const message = el("div", { class: "fal-keys-msg" });
  const note = el("div", { class: "fal-keys-note" });
  const nameInput = el("input", { name: "name", placeholder: "name, e.g. work", maxlength: "40",
    autocomplete: "off", spellcheck: "false" });
  const keyInput = el("input", { name: "key", type: "password", placeholder: "fal key (id:secret)",
    autocomplete: "new-password", spellcheck: "false" });
  const addButton = el("button", { class: "fal-mini", type: "submit" }, "Add");
  const say = sayer(message);
  let current = null;

  function row(name, hint, { env = false } = {}) {
    const status = el("span", { class: "fal-keys-status" });
    const test = el("button", { class: "fal-mini", type: "button", title: "one cheap call to fal" }, "Test");
    test.addEventListener("click", async () => {
      test.disabled = true;
      say(`Testing ${env ? "FAL_KEY" : `'${name}'`}…`);
      try {
        const line = keyTestLine(await routes.route("/keys/test", { method: "POST", body: JSON.stringify({ name }) }));
        say(line.text, line.tone);
      } catch (error) {
        say(error.message, "bad");
      } finally {
        test.disabled = false;
      }
    });
    const buttons = [test];
    if (!env) {
      const remove = el("button", { class: "fal-mini", type: "button" }, "Delete");
      remove.addEventListener("click", async () => {
        if (!confirm(`Delete the fal key '${name}' from this ComfyUI server?`)) return;
        try {
          show(await routes.route(`/keys/${encodeURIComponent(name)}`, { method: "DELETE" }));
          say(`Deleted '${name}'.`, "ok");
        } catch (error) {
          say(error.message, "bad");
        }
      });
      buttons.push(remove);
    }
    return el("div", { class: "fal-keys-row", "data-name": name },
      el("span", { class: "fal-keys-name", title: name }, env ? "environment FAL_KEY" : name),
      el("span", { class: "fal-keys-hint", title: "last four characters" }, hint || "—"),
      status, el("span", { class: "fal-keys-buttons" }, ...buttons));
  }

  function show(listing, { refresh = true } = {}) {
    current = listing;
    list.replaceChildren();
    for (const key of listing.keys ?? []) list.append(row(key.name, key.hint));
    if (listing.env?.set) list.append(row(listing.env.choice, listing.env.hint, { env: true }));
    if (!list.children.length) {
      list.append(el("div", { class: "fal-keys-empty" }, "No fal key saved yet, and FAL_KEY is not set."));
    }
    note.textContent = `Keys stay on the ComfyUI server in a private file (not in ComfyUI's settings); ` +
      `workflows only carry a key's name. Test calls ${listing.target || "fal"}.`;
    if (refresh) refreshKeyChoices(frontend, listing);
  }

  const form = el("form", { class: "fal-keys-add", autocomplete: "off" }, nameInput, keyInput, addButton);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    event.stopPropagation();
    const name = nameInput.value.trim();
    const key = keyInput.value;
    if (current?.keys?.some((k) => k.name === name) && !confirm(`Replace the saved fal key '${name}'?`)) return;
    addButton.disabled = true;
    try {
      const answer = await routes.route("/keys", { method: "POST", body: JSON.stringify({ name, key }) });
      keyInput.value = "";
      nameInput.value = "";
      show(answer);
      const saved = answer.keys.find((k) => k.name === answer.added);
      say(`${answer.replaced ? "Replaced" : "Saved"} '${answer.added}' (${saved?.hint ?? "…"}); ` +
        `pick it in a fal Key node.`, "ok");
      onKeyAdded();
    } catch (error) {
      say(error.message, "bad");
    } finally {
      addButton.disabled = false;
    }
  });
  // ComfyUI's keybindings must not see typing in these inputs.
  for (const input of [nameInput, keyInput]) input.addEventListener("keydown", (e) => e.stopPropagation());

  routes.route("/keys").then((listing) => show(listing, { refresh: false }), (error) => say(error.message, "bad"));
  return el("div", { class: "fal-keys" }, list, form, message, note);
}
