// Where a fal node's extra content goes, and the nodes it pushes aside. Pure functions,
// no ComfyUI imports, so `node --test web/tests/` checks them.

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

function box(node, titleHeight) {
  const [x, y] = node.pos;
  const [w, h] = node.size;
  return { left: x, right: x + w, top: y - titleHeight, bottom: y + h };
}

/**
 * A node grew: the nodes below it that it now covers move down just enough to keep `gap`
 * between them. Nodes beside it, above its top, or not covered stay where they are.
 * nodes: [{id, pos: [x, y], size: [w, h]}] (pos is the body's top-left, as in litegraph;
 * the title bar sits above it). -> [{node, dy}] in the order given.
 */
export function makeRoomMoves(grown, nodes, { gap = 20, titleHeight = 30 } = {}) {
  const me = box(grown, titleHeight);
  const moves = [];
  for (const other of nodes) {
    if (other === grown || other.id === grown.id) continue;
    const o = box(other, titleHeight);
    const besides = o.right <= me.left || o.left >= me.right;
    if (besides || o.top <= me.top || o.top >= me.bottom) continue;
    moves.push({ node: other, dy: me.bottom + gap - o.top });
  }
  return moves;
}
