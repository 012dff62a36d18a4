// "fal: spend this session": this session's fal calls from GET /fal/spend, as a dialog
// (command and menu) and as a section of Settings → fal.
import { copyButton, el } from "./dom.js";
import { priceSourceLine, spendView } from "./lib/price.js";

export const SPEND_STYLE = `
.fal-spend { display: flex; flex-direction: column; gap: 8px; width: min(900px, 90vw); font-size: 13px; }
.fal-spend-head { display: flex; align-items: center; gap: 8px; }
.fal-spend-head h3 { margin: 0; font-size: 15px; flex: 1; }
.fal-spend-table { max-height: 50vh; overflow: auto; border-radius: 6px; background: var(--comfy-input-bg, #222); }
.fal-spend table { width: 100%; border-collapse: collapse; font-size: 12px; }
.fal-spend th, .fal-spend td { text-align: left; padding: 4px 8px; white-space: nowrap; }
.fal-spend th { position: sticky; top: 0; background: var(--comfy-menu-bg, #333); font-weight: 600; }
.fal-spend tr + tr td { border-top: 1px solid rgba(255,255,255,.07); }
.fal-spend td.fal-usd, .fal-spend th.fal-usd { text-align: right; font-variant-numeric: tabular-nums; }
.fal-spend-total { font-weight: 600; }
.fal-spend-cached { opacity: .65; }
.fal-spend-compact { width: min(520px, 55vw); }
.fal-spend-compact .fal-spend-id { display: none; }
.fal-spend-compact .fal-spend-table { max-height: 40vh; }
.fal-overlay { position: fixed; inset: 0; z-index: 10000; background: rgba(0,0,0,.55); display: flex;
  align-items: center; justify-content: center; }
.fal-modal { background: var(--comfy-menu-bg, #2a2a2a); color: var(--fg-color, #ddd); padding: 14px 16px;
  border-radius: 10px; border: 1px solid var(--border-color, #555); box-shadow: 0 10px 40px rgba(0,0,0,.5); }
`;

/**
 * The spend panel. prices(): GET /fal/prices' last answer (where the estimates come from).
 * It follows new runs while it is on the page.
 */
export function spendPanel({ frontend, routes, prices = () => null, onClose, compact = false }) {
  const table = el("div", { class: "fal-spend-table" });
  const total = el("div", { class: "fal-spend-total" });
  const source = el("div", { class: "fal-keys-note" });
  const message = el("div", { class: "fal-keys-msg" });
  let report = "";

  async function refresh() {
    try {
      const body = await routes.route("/spend");
      const view = spendView(body);
      report = body.report ?? "";
      // r.cached and r.billed: lib/price.js spendView (issue 20's ledger: fal's own bill).
      const rows = view.rows.map((r) => el("tr", { class: (r.cached ?? r.state !== "billed") ? "fal-spend-cached" : "" },
        el("td", {}, r.time), el("td", { title: r.endpoint }, r.title),
        el("td", { class: "fal-result-id fal-spend-id" }, r.requestId || "—"), el("td", {}, r.state),
        el("td", { class: "fal-usd" }, r.usd), el("td", { class: "fal-usd" }, r.billed ?? "")));
      table.replaceChildren(...(rows.length ? [el("table", {},
        el("tr", {}, el("th", {}, "time"), el("th", {}, "node"), el("th", { class: "fal-spend-id" }, "fal request id"),
          el("th", {}, ""), el("th", { class: "fal-usd" }, "estimate"), el("th", { class: "fal-usd" }, "billed by fal")),
        ...rows)] : []));
      total.textContent = view.totalLine;
      message.textContent = "";
    } catch (error) {
      message.className = "fal-keys-msg fal-bad";
      message.textContent = error.message;
    }
    source.textContent = `${priceSourceLine(prices())} "billed by fal" is fal's bill for a request ` +
      "(its billable units × the unit price); \"estimate\" where fal sent none.";
  }

  const refreshButton = el("button", { class: "fal-mini", type: "button" }, "Refresh");
  refreshButton.addEventListener("click", refresh);
  // The report is read when clicked: the button is made before the first answer.
  const copy = copyButton(() => report, "copy the report as text", "Copy");
  const head = el("div", { class: "fal-spend-head" }, el("h3", {}, "fal spend this session"),
    refreshButton, copy, onClose ? el("button", { class: "fal-mini", type: "button", onclick: onClose }, "Close") : null);
  const panel = el("div", { class: compact ? "fal-spend fal-spend-compact" : "fal-spend" },
    head, table, total, source, message);
  // Follow new runs while the panel is open.
  const stop = frontend.onExecuted(() => (panel.isConnected ? refresh() : stop()));
  panel.falRefresh = refresh;
  refresh();
  return panel;
}

/** The spend panel in a modal over the page (Escape or a click outside closes it). */
export function openSpendDialog(options) {
  const doc = globalThis.document;
  doc.querySelector(".fal-overlay")?.remove();
  const overlay = el("div", { class: "fal-overlay" });
  const close = () => {
    overlay.remove();
    doc.removeEventListener("keydown", onKey, true);
  };
  const onKey = (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    }
  };
  overlay.addEventListener("click", (event) => event.target === overlay && close());
  doc.addEventListener("keydown", onKey, true);
  overlay.append(el("div", { class: "fal-modal", role: "dialog", "aria-label": "fal spend this session" },
    spendPanel({ ...options, onClose: close })));
  doc.body.append(overlay);
  return overlay;
}
