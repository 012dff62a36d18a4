// Small stand-ins for ComfyUI's app, api and litegraph nodes, for the feature modules' tests.
// A node's computeSize adds its widgets' heights the way the classic canvas does (a DOM
// widget counts its getMinHeight), so growing and moving can be checked in graph units.

export const WIDGET_PX = 24;     // a canvas-drawn widget row

export function makeNode(id, { type = "FalSharpen", pos = [0, 0], size = [300, 100], widgets = [], inputs = [] } = {}) {
  const node = {
    id, type, pos: [...pos], size: [...size], inputs,
    badges: [],
    widgets: widgets.map((w) => ({ ...w })),
    addDOMWidget(name, widgetType, element, options) {
      const widget = { name, type: widgetType, element, options };
      this.widgets.push(widget);
      return widget;
    },
    computeSize() {
      const body = this.widgets.reduce((sum, w) => sum + (w.options?.getMinHeight ? w.options.getMinHeight() : WIDGET_PX), 0);
      return [this.size[0], 10 + body];
    },
    setSize(size) {
      this.size = [...size];
    },
    setDirtyCanvas() {},
  };
  return node;
}

/** An api whose events the test fires with api.fire(type, detail). */
export function makeApi(fetchRoute = () => ({ ok: true, status: 200, body: {} })) {
  const listeners = {};
  return {
    listeners,
    addEventListener(type, fn) {
      (listeners[type] ??= []).push(fn);
    },
    removeEventListener(type, fn) {
      listeners[type] = (listeners[type] ?? []).filter((f) => f !== fn);
    },
    fire(type, detail) {
      for (const fn of listeners[type] ?? []) fn({ detail });
    },
    async fetchApi(path, options) {
      const { ok = true, status = 200, body = null } = await fetchRoute(path, options);
      return { ok, status, json: async () => body };
    },
  };
}

export function makeApp(nodes, { vue = false } = {}) {
  const graph = {
    _nodes: nodes,
    _groups: [],
    changes: 0,
    getNodeById: (id) => nodes.find((n) => String(n.id) === String(id)) ?? null,
    change() {
      this.changes += 1;
    },
    setDirtyCanvas() {},
  };
  for (const node of nodes) node.graph = graph;
  return {
    graph,
    canvas: { setDirty() {} },
    // A Pinia store in the front end: the badge version is kept on it.
    extensionManager: { setting: { get: (id) => (id === "Comfy.VueNodes.Enabled" ? vue : undefined) } },
  };
}

/** Runs timers set with setTimeout(fn, 0) (the classic canvas' afterLayout). */
export const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
