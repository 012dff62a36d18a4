// The one chip a fal node shows: its price before a run and, after one, what the last run
// cost. Short enough to fit inside the node in both modes (classic: above the title beside
// ComfyUI's own badge; Nodes 2.0: in the chip row at the bottom). Pure functions, no
// ComfyUI imports. The numbers come from lib/price.js (its rules are not repeated here).
import { formatUsd } from "./price.js";

/** The longest chip this returns for prices under $100 (checked by the tests). */
export const CHIP_MAX_CHARS = 26;

/** estimateRun(...) -> "≈ $0.08", "price varies" (per second, vague units), "billed $0.02"
 * (what fal last billed for these inputs), "price ?". */
export function shortPrice(run) {
  if (!run?.known) return "price ?";
  if (run.varies) return "price varies";
  if (run.learned) return `billed ${formatUsd(run.total)}`;
  if (run.total === null || run.total === undefined) return `${formatUsd(run.unitPrice)}/${run.unitLabel}`;
  return `≈ ${formatUsd(run.total)}`;
}

/** lastRunFromOutput(...) -> "last $0.05" (fal's bill where it came, else the estimate),
 * "last $0 cached", "last ?"; "" before a run. */
export function shortLastRun(last) {
  if (!last) return "";
  if (last.items && last.cached >= last.items) return "last $0 cached";
  const cost = last.billed ?? last.cost;
  if (cost === null || cost === undefined) return "last ?";
  return `last ${formatUsd(cost)}`;
}

/** The chip: "≈ $0.08 · last $0.05". */
export function priceChip(run, last) {
  return [shortPrice(run), shortLastRun(last)].filter(Boolean).join(" · ");
}
