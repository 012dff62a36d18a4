// Who moves when a fal node grows (a result or failure panel after a run, fal Image
// Endpoint's form when an endpoint is picked), in the classic canvas and in Nodes 2.0.
// The rules are lib/layout.js; this module measures the nodes and moves them.
import { cascadeMoves, classicBox, groupGrowth } from "./lib/layout.js";

export function createLayout(frontend) {
  /** Every node of `node`'s graph as drawn: measured in Nodes 2.0, from pos/size otherwise. */
  function boxes(nodes) {
    const titleHeight = frontend.titleHeight();
    return nodes.map((n) => frontend.measuredBox(n) ?? classicBox(n, { titleHeight }));
  }

  /** Moves the nodes `node` now covers, and the ones they then cover, down its column;
   * their groups grow to keep them. */
  function makeRoom(node) {
    const graph = frontend.graphOf(node);
    const nodes = frontend.nodesOf(graph);
    const all = boxes(nodes);
    const grown = all.find((b) => b.id === node.id);
    if (!grown) return [];
    const moves = cascadeMoves(grown, all);
    const groups = frontend.groupsOf(graph);
    const growth = groupGrowth(groups.map((g, i) => ({ id: i, ...frontend.groupBox(g) })), all, moves);
    for (const { id, dy } of moves) {
      const other = nodes.find((n) => n.id === id);
      other.pos = [other.pos[0], other.pos[1] + dy];
    }
    for (const { id, dh } of growth) {
      const group = groups[id];
      group.size = [group.size[0], group.size[1] + dh];
    }
    if (moves.length) {
      frontend.redraw();
      frontend.graphChanged();
    }
    return moves;
  }

  /** Before a run: the node's height and its minimum, so fitNode keeps what the user added. */
  function rememberBase(node) {
    node.falBase = [node.size[1], node.computeSize?.()?.[1] ?? node.size[1]];
  }

  /**
   * Grow `node` to hold its widgets at their size, then make room below it. What the
   * node's widgets had beyond their minimum before (a prompt box the user made taller) is
   * kept: the node grows by what was added. It never shrinks here.
   */
  function fitNode(node) {
    const wanted = node.computeSize?.()?.[1] ?? 0;
    const [baseHeight, baseMinimum] = node.falBase ?? [0, 0];
    const target = Math.max(wanted, baseHeight + (wanted - baseMinimum));
    if (wanted && node.size[1] < target) node.setSize([node.size[0], target]);
    frontend.redraw(node);
    // Nodes 2.0 sizes a node from its content at the next layout: measure after it.
    frontend.afterLayout(node, () => makeRoom(node));
  }

  return { makeRoom, fitNode, rememberBase };
}
