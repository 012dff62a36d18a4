// The panel a fal node grows to hold once it ran: its final status, result URLs (copyable)
// and fal request ids; or, when it failed, the pack's sentence (node, cause, fix) in red.
// While a node runs its status is ComfyUI's own progress text (both front ends show it in
// the node); once it ran, the panel replaces it, so the status is in one place at a time.
// The sentence is shown in the node in every front end: 1.58 puts it only behind
// "View details", 1.27 in a dialog.
import { copyButton, el } from "./dom.js";
import { failureLines, nodeErrorSentences } from "./lib/failure.js";
import { resultView } from "./lib/format.js";
import { domWidgetHeight, RESULT_ROW_PX, resultPanelHeight, wrappedHeight } from "./lib/layout.js";

const PANEL_WIDGET = "fal_result";

export const RESULT_STYLE = `
.fal-result { font-size: 11px; line-height: 1.5; overflow-y: auto; overflow-x: hidden; padding: 3px 4px;
  box-sizing: border-box; color: var(--fg-color, #ddd); }
.fal-result a { color: #7fb4ff; text-decoration: none; }
.fal-result-line { display: flex; gap: 6px; align-items: center; white-space: nowrap; height: ${RESULT_ROW_PX}px;
  box-sizing: border-box; }
.fal-result-line .fal-mini { padding: 0 8px; height: 18px; line-height: 16px; }
.fal-result-line > :first-child { overflow: hidden; text-overflow: ellipsis; flex: 1; }
.fal-result-report { font: 10px/16px monospace; white-space: pre-wrap; overflow-wrap: anywhere; }
.fal-result-failed { color: #ff8080; white-space: normal; overflow-wrap: anywhere; line-height: 16px; font-size: 11px; }
`;

export function createResultPanel({ frontend, layout }) {
  function panel(node) {
    let widget = frontend.findWidget(node, PANEL_WIDGET);
    if (widget) return widget;
    const box = el("div", { class: "fal-result" });
    box.falHeight = 0;
    // The element is falHeight tall; the widget adds the front end's margin around it (the
    // last row sat on the node's bottom edge, under the next node's badges, without it).
    const height = () => domWidgetHeight(box.falHeight);
    widget = frontend.addDomWidget(node, PANEL_WIDGET, PANEL_WIDGET, box, {
      getMinHeight: height,
      getMaxHeight: height,
      getHeight: height,
    });
    widget.falBox = box;
    return widget;
  }

  function fill(node, lines, height) {
    const widget = panel(node);
    widget.falBox.replaceChildren(...lines);
    widget.falBox.falHeight = height;
    widget.falBox.style.height = `${height}px`;
    // The panel now carries the final status: ComfyUI's progress text would repeat it.
    frontend.removeProgressText(node);
    layout.fitNode(node);
  }

  /** A fal node's UI output after a run -> the panel (nothing when it has no results). */
  function showResult(node, output) {
    const view = resultView(output);
    if (!view) return false;
    const lines = [el("div", { class: "fal-result-line" }, el("span", { title: view.summary }, view.summary),
      view.urls.length > 1 ? copyButton(view.copyText, "copy every URL, one a line") : null)];
    view.urls.forEach((entry, i) => {
      const link = entry.inline
        ? el("span", { title: "inline result: fal keeps no copy" }, `${i + 1}. ${entry.label}`)
        : el("a", { href: entry.url, target: "_blank", rel: "noopener noreferrer", title: entry.url },
          `${i + 1}. ${entry.label}`);
      lines.push(el("div", { class: "fal-result-line" }, link, copyButton(entry.url, "copy this URL")));
    });
    for (const id of view.requestIds) {
      lines.push(el("div", { class: "fal-result-line" },
        el("span", { class: "fal-result-id", title: "fal request id" }, `request ${id}`),
        copyButton(id, "copy the request id")));
    }
    fill(node, lines, resultPanelHeight(lines.length));
    return true;
  }

  /**
   * The fal Spend node's report (its UI output's `text`): one row a line, in its body. No
   * front end shows a node's `ui.text` by itself, so without this the node ran and showed
   * nothing. Long lines wrap, so the estimate and billed columns at their end stay in sight.
   */
  function showReport(node, output) {
    const text = output?.text?.[0];
    if (typeof text !== "string" || !text) return false;
    const rows = text.split("\n");
    const width = Math.max(120, (node.size?.[0] ?? 300) - 16);
    fill(node, rows.map((line) => el("div", { class: "fal-result-report" }, line)), wrappedHeight(rows, width));
    return true;
  }

  /** The node failed: its sentences in the node's body. */
  function showFailure(node, sentences) {
    const texts = failureLines(sentences);
    if (!texts.length) return false;
    const width = Math.max(120, (node.size?.[0] ?? 300) - 16);
    const lines = texts.map((text) => el("div", { class: "fal-result-failed", title: text }, text));
    fill(node, lines, wrappedHeight(texts, width));
    return true;
  }

  function clear(node) {
    const widget = frontend.findWidget(node, PANEL_WIDGET);
    if (!widget?.falBox) return;
    widget.falBox.replaceChildren();
    widget.falBox.falHeight = 0;
    widget.falBox.style.height = "0px";
  }

  /** A node starts running: its last result or failure goes. */
  function startRun(node) {
    clear(node);
    node.falFailed = null;
  }

  /** The node failed while running (the execution_error's sentence). */
  function showRunFailure(node, sentence) {
    if (showFailure(node, [sentence])) node.falFailed = "run";
  }

  /**
   * ComfyUI refused a prompt (its node_errors) or accepted one ({}), for the pack's `nodes`.
   * A refusal's sentences replace the last refusal's; a failure while running stays until
   * the node runs again (the answer to an accepted prompt can arrive after its first node
   * already failed).
   */
  function showPromptErrors(nodes, nodeErrors) {
    for (const node of nodes) {
      const sentences = nodeErrorSentences(nodeErrors?.[String(node.id)]);
      if (sentences.length) {
        if (showFailure(node, sentences)) node.falFailed = "refused";
      } else if (node.falFailed === "refused") {
        clear(node);
        node.falFailed = null;
      }
    }
  }

  return { showResult, showReport, showFailure, clear, startRun, showRunFailure, showPromptErrors };
}
