// fal Image Endpoint's form: from one catalogue endpoint's schema (GET /fal/catalogue/{id})
// to form fields, and between form values and the node's `arguments` JSON text.
// Pure functions, no ComfyUI imports, so `node --test web/tests/` checks them.
//
// The text stays the source of truth: the form only reads and writes it. A field the user
// clears is removed from the JSON (fal's default applies), so only what the user set is sent.

const LONG_TEXT = /prompt|instruction|text|description|caption/i;

/** Fields of an endpoint's schema, in fal's order, as form controls.
 * -> [{name, control, required, tooltip, placeholder, min, max, step, options, socket, textFallback}]
 * `socket` names what the node's sockets fill: the field itself, or an image inside it
 * ("image_2 fills ip_adapter.image_url"; in a list of objects, item i gets frame i).
 * control: "number" | "integer" | "enum" | "boolean" | "text" | "textarea" | "json" | "image" */
export function describeFields(entry) {
  const sockets = entry?.sockets ?? {};
  return Object.entries(entry?.input ?? {}).map(([name, field]) => {
    const described = {
      name,
      required: Boolean(field.required),
      tooltip: field.description ?? "",
      placeholder: field.default === undefined ? "" : `fal default: ${JSON.stringify(field.default)}`,
      default: field.default,
    };
    if (field.image) {
      const from = sockets[name];
      return { ...described, control: "image", socket: from ? from.join(", ") : null,
        placeholder: from ? `from ${from.join(", ")} (or an image URL in the JSON)` : "an image URL in the JSON" };
    }
    const fills = nestedFills(name, sockets);
    if (fills.length) {
      // An object (or list of objects) whose image the sockets fill; its other fields are JSON.
      return { ...described, control: "json", socket: fills.join("; "),
        placeholder: `${fills.join("; ")}; the rest as JSON${described.placeholder ? ` (${described.placeholder})` : ""}` };
    }
    switch (field.type) {
      case "integer":
      case "number":
        return { ...described, control: field.type, min: field.min ?? field.gt, max: field.max ?? field.lt,
          step: field.type === "integer" ? 1 : "any" };
      case "enum":
        return { ...described, control: "enum", options: field.enum ?? [] };
      case "boolean":
        return { ...described, control: "boolean" };
      case "string":
      case "url":
        return { ...described, control: LONG_TEXT.test(name) || (field.max_length ?? 0) > 200 ? "textarea" : "text",
          maxLength: field.max_length };
      case "union":
        // A preset name or an object (image_size), a number or a text...: typed as JSON,
        // or as plain text where one of fal's forms is text.
        return { ...described, control: "json", textFallback: field.any_of.some((a) => ["string", "enum"].includes(a.type)),
          tooltip: [described.tooltip, `fal takes ${field.any_of.map(form).join(" or ")}.`].filter(Boolean).join(" ") };
      default:
        return { ...described, control: "json" };
    }
  });
}

/** Where the sockets fill images inside field `name`: "image_2 fills ip_adapter.image_url",
 * "image, image_2 fill reference_images[0].image_url, reference_images[1].image_url, …". */
function nestedFills(name, sockets) {
  return Object.entries(sockets)
    .filter(([path]) => path.startsWith(`${name}.`) || path.startsWith(`${name}[].`))
    .map(([path, from]) => {
      if (!path.includes("[]")) return `${from.join(", ")} fills ${path}`;
      const items = [0, 1].map((i) => path.replace("[]", `[${i}]`)).join(", ");
      return `${from.join(", ")} fill ${items}, … (one item per frame)`;
    });
}

/** One union alternative in words, for the tooltip. */
function form(alternative) {
  switch (alternative.type) {
    case "enum": return `one of ${alternative.enum.map((v) => JSON.stringify(v)).join(", ")}`;
    case "object": return `an object {${Object.keys(alternative.fields ?? {}).map((k) => `"${k}": …`).join(", ")}}`;
    case "integer": return "a whole number";
    case "number": return "a number";
    case "list": return "a list [ ]";
    case "boolean": return "true or false";
    default: return "text";
  }
}

/** The node's `arguments` text -> {ok: true, values} or {ok: false, error}. Empty text: {}. */
export function readArguments(text) {
  const source = String(text ?? "").trim();
  if (!source) return { ok: true, values: {} };
  try {
    const values = JSON.parse(source);
    if (values === null || typeof values !== "object" || Array.isArray(values)) {
      return { ok: false, error: "`arguments` must be a JSON object, e.g. {\"prompt\": \"a red hat\"}" };
    }
    return { ok: true, values };
  } catch (error) {
    return { ok: false, error: `\`arguments\` is not JSON (${error.message})` };
  }
}

/** `text` with `name` set to `value` (undefined removes it), other fields and their order
 * kept. Returns null when `text` is not a JSON object: the form never overwrites what the
 * user is typing. */
export function writeArgument(text, name, value) {
  const read = readArguments(text);
  if (!read.ok) return null;
  const values = { ...read.values };
  if (value === undefined) delete values[name];
  else values[name] = value;
  return Object.keys(values).length ? JSON.stringify(values, null, 2) : "{}";
}

/** What a control shows for a value (undefined: not set, the placeholder shows fal's default). */
export function displayValue(field, value) {
  if (value === undefined) return field.control === "boolean" ? Boolean(field.default) : "";
  if (field.control === "json") return field.textFallback && typeof value === "string" ? value : JSON.stringify(value);
  if (field.control === "enum") return String(field.options.findIndex((o) => o === value));
  return field.control === "boolean" ? Boolean(value) : String(value);
}

/** A control's raw value -> {value} to write (value undefined: remove the field) or {error}. */
export function parseControl(field, raw) {
  switch (field.control) {
    case "integer":
    case "number": {
      if (String(raw).trim() === "") return { value: undefined };
      const number = Number(raw);
      if (!Number.isFinite(number)) return { error: `${field.name}: not a number` };
      if (field.control === "integer" && !Number.isInteger(number)) return { error: `${field.name}: a whole number` };
      if (field.min !== undefined && number < field.min) return { error: `${field.name}: at least ${field.min}` };
      if (field.max !== undefined && number > field.max) return { error: `${field.name}: at most ${field.max}` };
      return { value: number };
    }
    case "enum": {
      const index = Number(raw);
      if (String(raw) === "" || !Number.isInteger(index) || index < 0) return { value: undefined };
      return { value: field.options[index] };
    }
    case "boolean":
      // The default is fal's: leaving the toggle at it sends nothing (unless fal needs it).
      return { value: !field.required && Boolean(raw) === Boolean(field.default) ? undefined : Boolean(raw) };
    case "json": {
      if (String(raw).trim() === "") return { value: undefined };
      try {
        return { value: JSON.parse(raw) };
      } catch {
        // square_hd without quotes: one of fal's forms is text, so it is text.
        return field.textFallback ? { value: String(raw).trim() } : { error: `${field.name}: not JSON` };
      }
    }
    default:
      return { value: String(raw) === "" ? undefined : String(raw) };
  }
}

/** Fields in `values` the schema does not know (the server refuses them before any upload). */
export function unknownFields(entry, values) {
  const known = new Set(Object.keys(entry?.input ?? {}));
  return Object.keys(values ?? {}).filter((name) => !known.has(name));
}
