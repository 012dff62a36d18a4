// The layout rules: how tall a fal node's extra content is, and which nodes move when a
// node grows. Pure functions on plain boxes, no ComfyUI imports, so `node --test web/tests/`
// checks them; web/layout.js measures the boxes (classic canvas or Nodes 2.0) and applies
// the moves.

/** Height of one row of the result panel (a link or id with its copy button), in px. */
export const RESULT_ROW_PX = 22;
const RESULT_PADDING_PX = 6;
/** More rows than this scroll inside the panel (whole rows: none is cut in half). */
export const RESULT_MAX_ROWS = 8;

/** The result panel's height for `rows` rows: every row whole, at most RESULT_MAX_ROWS. */
export function resultPanelHeight(rows) {
  const n = Math.max(0, Math.floor(Number(rows) || 0));
  if (!n) return 0;
  return Math.min(n, RESULT_MAX_ROWS) * RESULT_ROW_PX + RESULT_PADDING_PX;
}

/** The margin the front end keeps around a DOM widget's element, above and below (both
 * 1.27 and 1.58: DEFAULT_MARGIN 10); the element gets the widget's height minus twice it. */
export const DOM_WIDGET_MARGIN_PX = 10;

/** The height a DOM widget asks for so its element is `contentPx` tall (0 stays 0). */
export function domWidgetHeight(contentPx) {
  const content = Math.max(0, Number(contentPx) || 0);
  return content ? content + 2 * DOM_WIDGET_MARGIN_PX : 0;
}

// fal Image Endpoint's form (web/endpoint_form.js sets these heights in its CSS, so the
// estimate is the height the browser gives it, in both canvases).
export const FORM_ROW_PX = 22;          // an input, select or checkbox row
export const FORM_TEXTAREA_PX = 40;     // a prompt-like text (two lines)
export const FORM_NOTE_LINE_PX = 16;    // one line of a note or error
export const FORM_GAP_PX = 4;
export const FORM_PADDING_PX = 8;         // 4 px above and below the rows
const FORM_NOTE_CHARS_PER_LINE = 48;
/** A form taller than this scrolls inside the node (an endpoint with dozens of fields). */
export const FORM_MAX_PX = 520;
/** The form's height before its endpoint's schema arrived (one note line). */
export const FORM_EMPTY_PX = FORM_PADDING_PX + FORM_NOTE_LINE_PX;

/**
 * The height fal Image Endpoint's form needs to show every row at full size.
 * rows: [{control}] as lib/schema_form.js describeFields gives them, and [{note: text}]
 * for the note and error lines above them. -> px, at most FORM_MAX_PX.
 */
export function formHeight(rows) {
  const list = Array.isArray(rows) ? rows : [];
  if (!list.length) return FORM_EMPTY_PX;
  let total = FORM_PADDING_PX + FORM_GAP_PX * (list.length - 1);
  for (const row of list) {
    if (row?.note !== undefined) {
      const lines = Math.max(1, Math.ceil(String(row.note).length / FORM_NOTE_CHARS_PER_LINE));
      total += lines * FORM_NOTE_LINE_PX;
    } else {
      total += row?.control === "textarea" ? FORM_TEXTAREA_PX : FORM_ROW_PX;
    }
  }
  return Math.min(total, FORM_MAX_PX);
}

/** Space between a grown node and a node it pushed down, in graph units. */
export const GAP_PX = 24;
/** Space a group keeps below the lowest node it holds. */
export const GROUP_PADDING_PX = 12;
/** Classic canvas: the badges row (node source, price) drawn above a node's title. */
export const BADGE_ROW_PX = 22;

/**
 * A litegraph node's box as drawn in the classic canvas: pos is the body's top-left, the
 * title bar sits above it and the badges above the title. -> {id, left, right, top, bottom}
 */
export function classicBox(node, { titleHeight = 30, badgeRow = BADGE_ROW_PX } = {}) {
  const [x, y] = node.pos;
  const [w, h] = node.size;
  return { id: node.id, left: x, right: x + w, top: y - titleHeight - badgeRow, bottom: y + h };
}

const sideBySide = (a, b) => a.right <= b.left || a.left >= b.right;

/**
 * `grown` grew: every node it now covers moves down to `gap` below it, and every node that
 * one then covers moves too, and so on down the column, so no node ends up on another.
 * Nodes beside it, above its top or not covered stay where they are.
 * grown, boxes: {id, left, right, top, bottom} in graph units (grown may be among boxes).
 * -> [{id, dy}], dy > 0, in the order of `boxes`.
 */
export function cascadeMoves(grown, boxes, { gap = GAP_PX } = {}) {
  // `was`: the top before any move. "Below" is decided on it, so a node pushed level with
  // the one that was above it is still pushed by it.
  const others = boxes.filter((b) => b.id !== grown.id).map((b) => ({ ...b, was: b.top, dy: 0 }));
  const pushers = [{ ...grown, was: grown.top }];
  while (pushers.length) {
    // The highest pusher first: a node pushed twice moves once, as far as the lowest asks.
    pushers.sort((a, b) => a.was - b.was);
    const pusher = pushers.shift();
    for (const other of others) {
      if (other.id === pusher.id || sideBySide(other, pusher)) continue;
      if (other.was <= pusher.was || other.top >= pusher.bottom) continue;
      const dy = pusher.bottom + gap - other.top;
      other.top += dy;
      other.bottom += dy;
      other.dy += dy;
      const queued = pushers.find((p) => p.id === other.id);
      if (queued) Object.assign(queued, { top: other.top, bottom: other.bottom });
      else pushers.push({ ...other });
    }
  }
  return others.filter((b) => b.dy > 0).map(({ id, dy }) => ({ id, dy }));
}

const inside = (box, group) => box.left >= group.left && box.right <= group.right &&
  box.top >= group.top && box.bottom <= group.bottom;

/**
 * A group that held a node before it moved grows to hold it after, so moving never takes a
 * node out of its group (dragging the group would leave it behind).
 * groups, boxes: {id, left, right, top, bottom} before the moves; moves: cascadeMoves(...).
 * -> [{id, dh}] for the groups that grow.
 */
export function groupGrowth(groups, boxes, moves, { padding = GROUP_PADDING_PX } = {}) {
  const dyOf = new Map(moves.map((m) => [m.id, m.dy]));
  const out = [];
  for (const group of groups) {
    let bottom = group.bottom;
    for (const box of boxes) {
      const dy = dyOf.get(box.id);
      if (dy && inside(box, group)) bottom = Math.max(bottom, box.bottom + dy + padding);
    }
    if (bottom > group.bottom) out.push({ id: group.id, dh: bottom - group.bottom });
  }
  return out;
}

// A failure sentence in the result panel: 11 px text on 16 px lines, wrapped.
const TEXT_LINE_PX = 16;
const TEXT_CHAR_PX = 6.2;

/** Height of `texts` (one paragraph each) wrapped in `widthPx`, with the panel's padding. */
export function wrappedHeight(texts, widthPx) {
  const perLine = Math.max(8, Math.floor((Number(widthPx) || 300) / TEXT_CHAR_PX));
  const lines = (Array.isArray(texts) ? texts : [texts])
    .reduce((sum, text) => sum + Math.max(1, Math.ceil(String(text ?? "").length / perLine)), 0);
  return lines * TEXT_LINE_PX + RESULT_PADDING_PX;
}
