// Price badges on fal nodes and the spend view. Pure functions, no ComfyUI imports,
// so `node --test web/tests/` checks them.
//
// A price is what GET /fal/prices sends per endpoint: {unit_price, unit, source, rules}, source
// "fal" (fal's Platform API) or "fallback" (the table shipped with the pack). `rules` are the
// server's price rules (nodes/pricing.py PriceRule), applied here to the node's widget values
// exactly as the server applies them to a request's payload:
//   {field, per_value: true, most}                 the request buys that many units (num_images);
//                                                  a value that is not a count counts as `most`
//   {field, multiplier, equals?: [...], prefix?}   the unit price times `multiplier` when the
//                                                  value is one of `equals` or starts with `prefix`
// and `default`, where given: what an input left out counts as (fal's default).

const PER_IMAGE = new Set(["image", "images"]);
const PER_MEGAPIXEL = new Set(["megapixel", "megapixels", "mp"]);

/** Dollars for a badge: "$0.08", "$0.025", "$0.002", "$1.50", "$0". */
export function formatUsd(value) {
  const v = Number(value);
  if (!Number.isFinite(v) || v <= 0) return "$0";
  if (v >= 1) return `$${v.toFixed(2)}`;
  const text = v >= 0.01 ? v.toFixed(3) : v.toPrecision(2);
  // Keep at least two decimals ("$0.08", not "$0.080" or "$0.1").
  let trimmed = Number(text).toString();
  if (trimmed.includes("e")) trimmed = v.toFixed(6);
  const [whole, frac = ""] = trimmed.split(".");
  return `$${whole}.${frac.padEnd(2, "0")}`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function count(value, fallback = 1) {
  // As the server's spec.image_count: 4.0 is 4, a fraction counts up, anything else `fallback`.
  const v = typeof value === "number" ? value : Number.NaN;
  return Number.isFinite(v) && v > 0 ? Math.max(1, Math.ceil(v - 1e-9)) : fallback;
}

// Without rules from the server: fal bills every image a request makes.
const DEFAULT_RULES = [{ field: "num_images", per_value: true }];

function ruleMatches(rule, value) {
  const text = String(value);
  if (Array.isArray(rule.equals) && rule.equals.map(String).includes(text)) return true;
  return Boolean(rule.prefix) && text.startsWith(String(rule.prefix));
}

/**
 * One request's price rules on the node's inputs -> {perRequest, multiplier, why}:
 * units per request (before megapixels) and the factor on the unit price.
 */
export function applyPriceRules(rules, inputs = {}) {
  let perRequest = 1;
  let multiplier = 1;
  const why = [];
  for (const rule of Array.isArray(rules) ? rules : DEFAULT_RULES) {
    if (!rule) continue;
    const given = Object.prototype.hasOwnProperty.call(inputs, rule.field);
    if (!given && (rule.default === undefined || rule.default === null)) continue;
    const value = given ? inputs[rule.field] : rule.default;
    if (rule.per_value) {
      perRequest *= count(value, count(rule.most));
    } else if (ruleMatches(rule, value)) {
      const factor = Number(rule.multiplier);
      if (Number.isFinite(factor) && factor >= 0) multiplier *= factor;
      why.push(rule.why || `${rule.field} ${value}`);
    }
  }
  return { perRequest, multiplier, why: why.join(", ") };
}

/**
 * What one run of a fal node will cost, before it runs.
 *
 * price: {unitPrice, unit, source, rules} (or the route's {unit_price, ...}); null when unknown.
 * images: requests the node makes (one per input image; Kontext multi: `multi` makes it one).
 * inputs: the node's widget values by name, read by the price rules (num_images, style, ...).
 * numImages: shorthand for inputs.num_images (images fal makes per request).
 * megapixels: input megapixels per request when known (after a run); 1 MP is assumed before.
 * cached: requests a cache will answer (no charge).
 * learned: what fal last billed for this endpoint's requests (GET /fal/prices' `learned`).
 *
 * -> {total, units, unitLabel, unitPrice, multiplier, why, estimate, known, ...}
 */
export function estimateRun(price, { images = 1, numImages = 1, inputs = {}, multi = false,
  megapixels = null, cached = 0, learned = null } = {}) {
  const unitPrice = Number(price?.unitPrice ?? price?.unit_price);
  const unit = String(price?.unit ?? "").trim().toLowerCase();
  const source = price?.source ?? "fallback";
  if (!price || !Number.isFinite(unitPrice) || unitPrice < 0) {
    return { total: null, units: null, unitLabel: "", estimate: true, known: false };
  }
  const requests = multi ? 1 : count(images);
  const paid = Math.max(0, requests - Math.max(0, Math.floor(Number(cached) || 0)));
  const { perRequest, multiplier, why } = applyPriceRules(price.rules,
    { num_images: numImages, ...inputs });
  const outputs = paid * perRequest;
  const rule = { multiplier, why, basePrice: unitPrice };
  if (PER_IMAGE.has(unit)) {
    return { total: outputs * unitPrice * multiplier, units: outputs, unitLabel: "image",
      unitPrice: unitPrice * multiplier, ...rule, estimate: source !== "fal", known: true,
      perMegapixel: false, source };
  }
  if (PER_MEGAPIXEL.has(unit)) {
    // fal bills each image's megapixels rounded up to a whole one, as the server counts.
    const mp = Number(megapixels) > 0 ? Number(megapixels) : 1;
    const units = outputs * Math.max(1, Math.ceil(mp - 1e-9));
    return { total: units * unitPrice * multiplier, units, unitLabel: "MP",
      unitPrice: unitPrice * multiplier, ...rule, estimate: true, known: true, perMegapixel: true,
      assumedSize: !(Number(megapixels) > 0), source };
  }
  // A unit no one can count before the run (per second, "units", ...): the price varies,
  // until fal has billed these inputs once: then its last bill (marked as such).
  const last = learnedCost(learned, inputs);
  if (last !== null) {
    return { total: paid * last, units: paid, unitLabel: "request", unitPrice: last, ...rule,
      estimate: true, known: true, learned: true, source };
  }
  return { total: null, units: null, unitLabel: unit || "unit", unitPrice: unitPrice * multiplier,
    ...rule, estimate: true, known: true, varies: true, source };
}

// Inputs that don't change a request's price (nodes/pricing.py UNPRICED_INPUTS).
const UNPRICED_INPUTS = new Set(["seed", "sync_mode", "prompt", "negative_prompt",
  "enable_safety_checker", "output_format"]);

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * What fal last billed for one request with these inputs (GET /fal/prices' `learned` rows
 * of the endpoint: [{inputs, usd}]), or null. The inputs that don't change the price are
 * left out on both sides, as the server keeps them.
 */
export function learnedCost(rows, inputs = {}) {
  if (!Array.isArray(rows) || !rows.length) return null;
  const priced = (o) => canonical(Object.fromEntries(Object.entries(o ?? {})
    .filter(([k, v]) => !UNPRICED_INPUTS.has(k) && v !== undefined)));
  const mine = priced(inputs);
  const row = rows.find((r) => priced(r.inputs) === mine);
  const usd = Number(row?.usd);
  return row && Number.isFinite(usd) ? usd : null;
}

/**
 * The badge on a fal node: "≈ $0.08 · 2 images × $0.04", with " · estimate" where fal
 * bills per megapixel, the price is the shipped fallback, or the unit is unknown.
 * -> {text, estimate, title}
 */
export function formatPriceBadge(price, options = {}) {
  const run = estimateRun(price, options);
  if (!run.known) {
    return { text: "price unknown", estimate: true,
      title: "fal's price list has no price for this endpoint." };
  }
  const tail = run.estimate ? " · estimate" : "";
  const why = [];
  if (run.source !== "fal") why.push("price from the table shipped with the pack (fal's price list was not reached)");
  if (run.perMegapixel) {
    why.push(run.assumedSize ? "fal bills per megapixel; 1 MP per image assumed until the node ran"
      : "fal bills per megapixel of the result; sized like the last run's input");
  }
  if (run.multiplier !== 1) {
    why.push(`${run.why}: ${run.multiplier} × ${formatUsd(run.basePrice)} per ${run.unitLabel}`);
  }
  const reason = run.multiplier !== 1 ? ` (${run.why})` : "";
  const base = Number(price?.unitPrice ?? price?.unit_price);
  const billedPer = `fal bills ${formatUsd(base)} per ${String(price?.unit ?? "unit")}`;
  if (run.varies) {
    return { text: "price varies", estimate: true, title: `${billedPer}, which can't be counted ` +
      "before a run; the spend guard counts $0.25 a request until fal has billed these inputs" };
  }
  if (run.learned) {
    return { text: `${formatUsd(run.total)} last billed`, estimate: true, title: `${billedPer}; ` +
      `fal billed ${formatUsd(run.unitPrice)} for one request with these inputs last time` };
  }
  const units = run.perMegapixel ? `${run.units} MP × ${formatUsd(run.unitPrice)}/MP`
    : `${plural(run.units, "image")} × ${formatUsd(run.unitPrice)}`;
  return { text: `≈ ${formatUsd(run.total)} · ${units}${reason}${tail}`, estimate: run.estimate,
    title: why.join("; ") };
}

function first(value) {
  if (Array.isArray(value)) return value.length ? value[0] : undefined;
  return value;
}

/**
 * A fal node's executed UI data -> what its last run was, or null.
 * Uses fal_items / fal_cost / fal_cached / fal_megapixels when the node sends them, else
 * what its status line and request ids say ("≈ $0.060 · ...", "2 of 3 from cache"); a
 * per-megapixel line ("· 0.7864 MP ×") gives the input size with numImages (the
 * node's num_images when it ran).
 * -> {items, cached, cost (the estimate; null: unknown), billed (what fal billed; null: no
 *    bill came), megapixels}
 */
export function lastRunFromOutput(output, { numImages = 1 } = {}) {
  if (!output || typeof output !== "object") return null;
  const ids = Array.isArray(output.fal_request_ids) ? output.fal_request_ids : null;
  const status = String(first(output.fal_status) ?? "").split("\n")[0];
  let items = first(output.fal_items);
  items = items === undefined ? (ids ? ids.length : undefined) : Number(items);
  if (items === undefined || !Number.isFinite(items)) return null;
  let cached = first(output.fal_cached);
  if (cached === undefined) {
    const match = status.match(/(\d+) of (\d+) from cache/);
    cached = match ? Number(match[1]) : 0;
  }
  let cost = first(output.fal_cost);
  if (cost === undefined) {
    const match = status.match(/≈ \$(\d+(?:\.\d+)?)/);
    cost = match ? Number(match[1]) : (cached >= items ? 0 : null);
  }
  const billedValue = first(output.fal_billed);
  const billed = billedValue === undefined || billedValue === null ? null : Number(billedValue);
  let megapixels = first(output.fal_megapixels);
  if (megapixels === undefined) {
    const match = status.match(/· (\d+(?:\.\d+)?) MP ×/);
    const paid = items - (Number(cached) || 0);
    if (match && paid > 0) megapixels = Math.round((Number(match[1]) / (paid * count(numImages))) * 1e4) / 1e4;
  }
  return { items, cached: Number(cached) || 0, cost: cost === null ? null : Number(cost),
    billed: Number.isFinite(billed) ? billed : null,
    megapixels: Number(megapixels) > 0 ? Number(megapixels) : null };
}

/** The last run's badge: "last run $0.08 billed (≈ $0.06 estimated)", "last run ≈ $0.08
 * (estimate)", "last run $0 · 2 of 2 cached". */
export function formatLastRun(run) {
  if (!run) return "";
  const cached = run.cached ? ` · ${run.cached} of ${run.items} cached` : "";
  if (run.billed !== null && run.billed !== undefined) {
    const estimated = run.cost === null || run.cost === undefined ? "" : ` (≈ ${formatUsd(run.cost)} estimated)`;
    return `last run ${formatUsd(run.billed)} billed${estimated}${cached}`;
  }
  if (run.cost === null || run.cost === undefined) return `last run cost unknown${cached}`;
  if (run.items && run.cached >= run.items) return `last run $0${cached}`;
  return `last run ≈ ${formatUsd(run.cost)} (estimate)${cached}`;
}

/** A spend entry's time: "14:03:22". */
export function formatClock(at) {
  const d = new Date(Number(at) * 1000);
  if (Number.isNaN(d.getTime())) return "";
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

// fal's queue and run times of a spend entry, where known: " · queue 1.2s, run 3.4s".
function falTimes(e) {
  const parts = [["queue", e.queue_s], ["run", e.run_s]]
    .filter(([, v]) => v !== null && v !== undefined && Number.isFinite(Number(v)))
    .map(([name, v]) => `${name} ${Number(v).toFixed(1)}s`);
  return parts.length ? ` · ${parts.join(", ")}` : "";
}

/**
 * GET /fal/spend -> rows and a total line for the spend view.
 * -> {rows: [{time, title, endpoint, requestId, state, cached, usd (estimate), billed ("estimate"
 *    until fal's bill came)}], totalLine}
 */
export function spendView(answer) {
  const entries = Array.isArray(answer?.entries) ? answer.entries : [];
  const rows = entries.map((e) => ({
    time: formatClock(e.at),
    title: e.title || e.endpoint,
    endpoint: e.endpoint,
    requestId: e.request_id || "",
    state: (e.cached ? "cached (no charge)" : e.state || "sent") + falTimes(e),
    cached: Boolean(e.cached),
    usd: e.cached ? "$0" : formatUsd(e.estimated_usd),
    billed: e.cached ? "$0" : e.billed_usd === null || e.billed_usd === undefined ? "estimate" : formatUsd(e.billed_usd),
  }));
  const sent = answer?.billed ?? entries.filter((e) => !e.cached).length;
  const cached = answer?.cached ?? entries.filter((e) => e.cached).length;
  const withBill = answer?.with_bill ?? entries.filter((e) => !e.cached && e.billed_usd != null).length;
  const parts = withBill ? `${formatUsd(answer?.billed_total ?? 0)} billed by fal for ${withBill}` +
    (withBill < sent ? `, ≈ ${formatUsd(answer?.estimated_total ?? 0)} estimated for ${sent - withBill}` : "")
    : "estimates: fal sent no bill yet";
  const totalLine = entries.length
    ? `${formatUsd(answer?.total ?? 0)} this session (${parts}) · ${plural(sent, "request")}, ${cached} from cache`
    : "No fal calls in this session yet.";
  return { rows, totalLine };
}

/** One sentence on where the prices come from, for the spend view and the settings page. */
export function priceSourceLine(answer) {
  if (!answer) return "Prices not loaded yet.";
  const sources = new Set(Object.values(answer.prices ?? {}).map((p) => p.source));
  if (sources.size && [...sources].every((s) => s === "fal")) {
    return answer.fresh ? "Prices from fal's price list (checked within a day)." :
      "Prices from fal's price list, more than a day old; refreshing.";
  }
  const when = answer.fallback_date ? ` of ${answer.fallback_date}` : "";
  return `Prices from the table shipped with the pack${when} (estimates)` +
    (answer.refreshing ? "; asking fal for current ones." : "; fal's price list was not reached or no key is set.");
}

/**
 * Which endpoint a node's badge prices, from GET /fal/prices' `nodes` entry for its type:
 * a fixed endpoint (the ten nodes) or the value of a widget (fal Image Endpoint's
 * `endpoint`). readWidget(name) gives a widget's value.
 * -> {endpointId, multi, price} or null when the node is not a fal endpoint node.
 */
export function nodePriceInfo(answer, nodeType, readWidget) {
  const info = answer?.nodes?.[nodeType];
  if (!info) return null;
  const endpointId = info.endpoint_widget ? readWidget?.(info.endpoint_widget) : info.endpoint_id;
  if (!endpointId) return null;
  const row = answer.prices?.[endpointId];
  const price = row ? { unitPrice: row.unit_price, unit: row.unit, source: row.source, rules: row.rules } : null;
  // fal Image Endpoint: the price rules (num_images, ...) read its `arguments` JSON.
  let inputs;
  if (info.endpoint_widget) {
    try {
      const parsed = JSON.parse(String(readWidget?.("arguments") ?? ""));
      inputs = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
    } catch {
      inputs = {};   // not JSON yet: the node refuses to run anyway
    }
  }
  return { endpointId, multi: Boolean(info.multi), price, inputs,
    learned: answer.learned?.[endpointId] ?? null };
}
