// The Recraft node's `colors` text <-> swatches. Pure functions, no ComfyUI imports.
//
// The text stays the source of truth: the swatches only read and rewrite it, so a
// workflow saved with the extension loads unchanged without it. The rules match
// parse_colors() in nodes/spec.py: colours are separated by commas, semicolons or
// new lines (a comma inside rgb(...) does not separate), and each is #rgb, #rrggbb
// or an rgb triple.

const HEX = /^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$/;
const RGB = /^(?:rgb)?\(?\s*(\d{1,3})\s*[, ]\s*(\d{1,3})\s*[, ]\s*(\d{1,3})\s*\)?$/;
const SEPARATOR = /;|\n|,(?![^()]*\))/;

/** The colour entries of `text`, trimmed, empty ones dropped. */
export function splitColorText(text) {
  return String(text ?? "")
    .split(SEPARATOR)
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

/** One entry -> "#rrggbb" (lower case), or null when it is not a colour. */
export function parseColor(entry) {
  const text = String(entry ?? "").trim();
  const hex = HEX.exec(text);
  if (hex) {
    let digits = hex[1].toLowerCase();
    if (digits.length === 3) digits = [...digits].map((c) => c + c).join("");
    return "#" + digits;
  }
  const rgb = RGB.exec(text);
  if (rgb) {
    const values = rgb.slice(1, 4).map(Number);
    if (values.every((v) => v >= 0 && v <= 255)) {
      return "#" + values.map((v) => v.toString(16).padStart(2, "0")).join("");
    }
  }
  return null;
}

/** `text` -> [{text, hex}] in order; hex is null for an entry that is not a colour. */
export function parseColors(text) {
  return splitColorText(text).map((entry) => ({ text: entry, hex: parseColor(entry) }));
}

/** Entries (strings) -> the text the node sends: "#ff8800, #223344". */
export function formatColors(entries) {
  return entries.map((e) => String(e).trim()).filter(Boolean).join(", ");
}

/** `text` with `hex` appended (unchanged if that colour is already there). */
export function addColor(text, hex) {
  const colour = parseColor(hex);
  if (!colour) throw new Error(`not a colour: ${hex}`);
  const entries = parseColors(text);
  if (entries.some((e) => e.hex === colour)) return String(text ?? "");
  return formatColors([...entries.map((e) => e.text), colour]);
}

/** `text` without its index-th entry (other entries keep their own spelling). */
export function removeColor(text, index) {
  const entries = splitColorText(text);
  if (index < 0 || index >= entries.length) return String(text ?? "");
  entries.splice(index, 1);
  return formatColors(entries);
}

/** Black or white, whichever reads better on `hex`. */
export function labelColor(hex) {
  const colour = parseColor(hex);
  if (!colour) return "#000000";
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16) / 255);
  const lin = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const luminance = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  return luminance > 0.35 ? "#000000" : "#ffffff";
}
