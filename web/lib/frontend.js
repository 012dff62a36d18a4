// Every front-end API the extension touches, in one place, with a fallback per front-end
// generation. Checked against comfyui-frontend-package 1.27.10 (bundled with ComfyUI
// 0.3.64) and 1.58.1, classic canvas and Nodes 2.0 (Vue nodes). When a front end changes,
// this is the file to mend. No ComfyUI imports: `app`, `api` and `document` are handed in,
// so `node --test web/tests/` checks it with small fakes.

const VUE_NODES_SETTING = "Comfy.VueNodes.Enabled";
const SETTINGS_COMMAND = "Comfy.ShowSettingsDialog";
// The node text the front end shows for PromptServer.send_progress_text (both generations).
export const PROGRESS_TEXT_WIDGET = "$$node-text-preview";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The settings-dialog entry of a category: 1.58 nav item, 1.27 listbox option. */
function findCategoryItem(doc, category) {
  const nav = doc.querySelector?.(`[data-nav-id$="/${category}"]`);
  if (nav) return nav;
  const options = doc.querySelectorAll?.(".p-dialog [role=option], .p-dialog li, [role=dialog] [role=option]") ?? [];
  return [...options].find((item) => item.textContent?.trim() === category) ?? null;
}

export function createFrontend({ app, api, doc = globalThis.document, win = globalThis.window } = {}) {
  const manager = () => app?.extensionManager;

  /** All graphs of the workflow: the root and its subgraphs (1.2x+ has subgraphs). */
  function graphs() {
    const list = [app?.graph];
    const subgraphs = app?.graph?.subgraphs;
    if (subgraphs?.values) list.push(...subgraphs.values());
    return list.filter(Boolean);
  }

  function nodesOf(graph) {
    return graph?._nodes ?? graph?.nodes ?? [];
  }

  const frontend = {
    graphs,
    nodesOf,

    /** Every node of a type in every graph. */
    nodesOfType(type) {
      return graphs().flatMap((graph) => nodesOf(graph).filter((node) => node.type === type));
    },

    findWidget(node, name) {
      return node?.widgets?.find((w) => w.name === name) ?? null;
    },

    setting(id) {
      try {
        const store = manager()?.setting;
        if (store?.get) return store.get(id);
        return app?.ui?.settings?.getSettingValue?.(id);
      } catch {
        return undefined;
      }
    },

    /** Nodes 2.0: litegraph's own drawing (onDrawForeground, canvas badges) is skipped. */
    isVueMode() {
      return Boolean(frontend.setting(VUE_NODES_SETTING));
    },

    async runCommand(id) {
      const command = manager()?.command;
      if (typeof command?.execute !== "function") return false;
      await command.execute(id);
      return true;
    },

    /**
     * A message the user sees: the front end's toast (both generations), else an alert.
     * severity: "info" | "warn" | "error" | "success".
     */
    notify(severity, summary, detail = "") {
      const toast = manager()?.toast;
      if (typeof toast?.add === "function") {
        toast.add({ severity, summary, detail, life: 8000 });
        return "toast";
      }
      win?.alert?.(detail ? `${summary}\n\n${detail}` : summary);
      return "alert";
    },

    /**
     * Opens the settings dialog on `category`'s page and resolves to true once `ready`
     * (a selector of the page's content) is in the document. 1.27 has
     * dialog.showSettingsDialog(category); 1.58 only the command, which opens the default
     * page, so the category's entry is clicked. False when nothing worked: the caller says so.
     */
    async openSettings(category, { ready, timeoutMs = 2000, stepMs = 50 } = {}) {
      const present = () => Boolean(ready && doc?.querySelector?.(ready));
      let opened = false;
      try {
        const dialog = manager()?.dialog;
        if (typeof dialog?.showSettingsDialog === "function") {
          dialog.showSettingsDialog(category);
          opened = true;
        } else {
          opened = await frontend.runCommand(SETTINGS_COMMAND);
        }
      } catch (error) {
        console.warn("[comfyui-fal-edit] could not open the settings dialog", error);
        opened = false;
      }
      if (!opened) return false;
      for (let waited = 0; waited <= timeoutMs; waited += stepMs) {
        if (present()) return true;
        findCategoryItem(doc, category)?.click?.();
        await sleep(stepMs);
      }
      return present();
    },

    /**
     * A DOM element as a display-only node widget (both modes mount it as it is): it holds
     * no value and is never saved, so workflows load and run without the pack's front end.
     * `options` adds its sizes (getMinHeight, getMaxHeight, getHeight).
     */
    addDomWidget(node, name, type, element, options = {}) {
      const widget = node.addDOMWidget(name, type, element, {
        serialize: false,
        hideOnZoom: false,
        getValue: () => "",
        setValue: () => {},
        ...options,
      });
      widget.serialize = false;   // not part of widgets_values: workflows load without the pack
      return widget;
    },

    /**
     * Calls fn(value) whenever the widget's value changes, however it changes: typing (the
     * Vue edit path calls only widget.callback), a loaded or pasted workflow and undo (they
     * set widget.value, then call node.onConfigure). Never relies on canvas drawing, which
     * Nodes 2.0 skips.
     */
    watchWidget(node, widget, fn) {
      let last = Symbol("unset");
      const notify = () => {
        const value = widget.value;
        if (value === last) return;
        last = value;
        try {
          fn(value);
        } catch (error) {
          console.warn("[comfyui-fal-edit] widget watcher failed", error);
        }
      };
      const callback = widget.callback;
      widget.callback = function (...args) {
        const result = callback?.apply(this, args);
        notify();
        return result;
      };
      // widget.value = x (workflow load, paste, undo, other extensions): hook the setter.
      let proto = widget;
      let descriptor;
      while (proto && !(descriptor = Object.getOwnPropertyDescriptor(proto, "value"))) {
        proto = Object.getPrototypeOf(proto);
      }
      if (!descriptor || descriptor.configurable !== false) {
        let plain = descriptor && "value" in descriptor ? descriptor.value : undefined;
        const get = descriptor?.get ? () => descriptor.get.call(widget) : () => plain;
        const set = descriptor?.set ? (v) => descriptor.set.call(widget, v) : (v) => { plain = v; };
        Object.defineProperty(widget, "value", {
          configurable: true,
          enumerable: true,
          get,
          set(v) {
            set(v);
            notify();
          },
        });
      }
      const onConfigure = node.onConfigure;
      node.onConfigure = function (...args) {
        const result = onConfigure?.apply(this, args);
        notify();
        return result;
      };
      notify();
      return notify;
    },

    /**
     * New choices for a combo on nodes already on the canvas. The array is changed in place:
     * the Vue dropdown (1.5x) keeps a reference to it and re-reads it when it opens; a
     * replaced array never reaches it.
     */
    setComboValues(widget, values) {
      if (!widget?.options) return false;
      const current = widget.options.values;
      if (Array.isArray(current)) current.splice(0, current.length, ...values);
      else widget.options.values = [...values];
      return true;
    },

    /** New nodes of `type` get the server's current definition (e.g. a combo's list). */
    async refreshNodeDef(type) {
      const answer = await frontend.fetchApi(`/object_info/${type}`, { cache: "no-store" });
      const defs = await answer.json();
      if (defs?.[type] && typeof app?.registerNodeDef === "function") {
        await app.registerNodeDef(type, defs[type]);
        return true;
      }
      return false;
    },

    /** fn(nodeId, text) for every PromptServer.send_progress_text. */
    onProgressText(fn) {
      api?.addEventListener?.("progress_text", (event) => {
        const detail = event?.detail ?? {};
        fn(String(detail.nodeId ?? detail.node ?? ""), detail.text ?? "");
      });
    },

    /** fetch() against the ComfyUI server (its /api prefix and user header included). */
    fetchApi(path, options) {
      return api.fetchApi(path, options);
    },

    /** fn(event) after any node ran; returns what stops it. */
    onExecuted(fn) {
      api?.addEventListener?.("executed", fn);
      return () => api?.removeEventListener?.("executed", fn);
    },

    /** The graph a node is in (a subgraph's node is not in the root graph). */
    graphOf(node) {
      return node?.graph ?? app?.graph ?? null;
    },

    /** The canvas, for a widget callback's usual (value, canvas, node) arguments. */
    canvas() {
      return app?.canvas ?? null;
    },

    /** Registers the extension (same call in every generation so far). */
    registerExtension(definition) {
      return app.registerExtension(definition);
    },

    /** fn(nodeId) when a node starts executing (null at the end of a prompt). */
    onExecuting(fn) {
      api?.addEventListener?.("executing", ({ detail }) => {
        const id = detail?.node ?? detail?.display_node ?? detail;
        fn(id === null || id === undefined ? null : String(id));
      });
    },

    /**
     * Removes the front end's progress-text widget from a node whose status the pack shows
     * itself (1.27 keeps the text after the run; 1.58 removes it at the end of the job in
     * the same way).
     */
    removeProgressText(node) {
      const index = node?.widgets?.findIndex((w) => w.name === PROGRESS_TEXT_WIDGET) ?? -1;
      if (index < 0) return false;
      const [widget] = node.widgets.splice(index, 1);
      try {
        widget.onRemove?.();
      } catch {
        // The element may already be gone.
      }
      return true;
    },

    /** The groups (coloured frames) of a graph. */
    groupsOf(graph) {
      return graph?._groups ?? graph?.groups ?? [];
    },

    /** A group's frame in graph units: {left, right, top, bottom} (its title included). */
    groupBox(group) {
      const [x, y] = group.pos;
      const [w, h] = group.size;
      return { left: x, right: x + w, top: y, bottom: y + h };
    },

    /** The height of a node's title bar in the classic canvas, in graph units. */
    titleHeight() {
      return globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    },

    /** A Nodes 2.0 node's element (null in the classic canvas or before it is mounted). */
    nodeElement(node) {
      if (!frontend.isVueMode()) return null;
      return doc?.querySelector?.(`[data-node-id="${node.id}"]`) ?? null;
    },

    /**
     * Where a node is drawn, in graph units: {id, left, right, top, bottom} with its title
     * and badges. Nodes 2.0 lays a node out from its content (chips at the bottom that may
     * spill past its edge): its element and children are measured then; null when it is not
     * mounted (the caller uses the classic box).
     */
    measuredBox(node) {
      const element = frontend.nodeElement(node);
      const canvasRect = app?.canvas?.canvas?.getBoundingClientRect?.();
      const ds = app?.canvas?.ds;
      if (!element?.getBoundingClientRect || !canvasRect || !ds) return null;
      const rects = [element, ...(element.children ?? [])].map((e) => e.getBoundingClientRect())
        .filter((r) => r.width || r.height);
      if (!rects.length) return null;
      const scale = ds.scale || 1;
      const x = (clientX) => (clientX - canvasRect.left) / scale - ds.offset[0];
      const y = (clientY) => (clientY - canvasRect.top) / scale - ds.offset[1];
      return { id: node.id, left: x(Math.min(...rects.map((r) => r.left))), right: x(Math.max(...rects.map((r) => r.right))),
        top: y(Math.min(...rects.map((r) => r.top))), bottom: y(Math.max(...rects.map((r) => r.bottom))) };
    },

    /**
     * fn() once the node's new content has its size: at once in the classic canvas; in
     * Nodes 2.0 after the next layout and again whenever the element changes size in the
     * next `windowMs` (images and fonts arrive late).
     */
    afterLayout(node, fn, { windowMs = 1500 } = {}) {
      const run = () => {
        try {
          fn();
        } catch (error) {
          console.warn("[comfyui-fal-edit] layout failed", error);
        }
      };
      if (!frontend.isVueMode()) return void setTimeout(run, 0);
      setTimeout(run, 50);
      const element = frontend.nodeElement(node);
      const Observer = win?.ResizeObserver ?? globalThis.ResizeObserver;
      if (!element || !Observer) return;
      const observer = new Observer(() => run());
      observer.observe(element);
      setTimeout(() => observer.disconnect(), windowMs);
    },

    /** fn(nodeId, sentence) when a node fails while the prompt runs (its exception's text). */
    onExecutionError(fn) {
      api?.addEventListener?.("execution_error", ({ detail }) => {
        if (detail?.node_id === undefined || detail?.node_id === null) return;
        fn(String(detail.node_id), String(detail.exception_message ?? "").trim());
      });
    },

    /**
     * fn(nodeErrors) when ComfyUI refuses a prompt before running it ({node id: {errors:
     * [{type, message, details}], class_type}}); fn({}) when it accepted one. Both
     * generations send the prompt through api.queuePrompt and throw the server's answer
     * as error.response.
     */
    onPromptChecked(fn) {
      const queuePrompt = api?.queuePrompt;
      if (typeof queuePrompt !== "function") return false;
      api.queuePrompt = async function (...args) {
        let answer;
        try {
          answer = await queuePrompt.apply(this, args);
        } catch (error) {
          const nodeErrors = error?.response?.node_errors;
          try {
            fn(nodeErrors && typeof nodeErrors === "object" ? nodeErrors : {});
          } catch (failure) {
            console.warn("[comfyui-fal-edit] could not show the prompt's errors", failure);
          }
          throw error;
        }
        try {
          fn({});
        } catch (failure) {
          console.warn("[comfyui-fal-edit] could not clear the prompt's errors", failure);
        }
        return answer;
      };
      return true;
    },

    /** Node badges: drawn above the title (classic) or as chips at the bottom (Nodes 2.0). */
    addBadge(node, make) {
      if (!Array.isArray(node.badges)) return false;   // a front end without node badges
      node.badges.push(make);
      return true;
    },

    /**
     * Read by the badge functions: Nodes 2.0 computes a node's chips from node.badges in a
     * Vue computed that only runs again when a reactive value it read changes. The
     * extension manager is a Pinia store (reactive), so a number kept on it is one.
     */
    badgeVersion() {
      return manager()?.falBadgeVersion ?? 0;
    },

    /**
     * Show the badges again after what they read changed (prices arrived, a run ended).
     * The classic canvas draws them every frame; Nodes 2.0 recomputes its chips when the
     * version read in badgeVersion changes (a new badges array alone does not do it).
     */
    refreshBadges(node) {
      const store = manager();
      if (store) store.falBadgeVersion = (store.falBadgeVersion ?? 0) + 1;
      frontend.redraw(node);
    },

    getNodeById(id) {
      for (const graph of graphs()) {
        const node = graph.getNodeById?.(id) ?? nodesOf(graph).find((n) => String(n.id) === String(id));
        if (node) return node;
      }
      return null;
    },

    redraw(node) {
      node?.setDirtyCanvas?.(true, true);
      app?.graph?.setDirtyCanvas?.(true, true);
      app?.canvas?.setDirty?.(true, true);
    },

    graphChanged() {
      app?.graph?.change?.();
    },
  };
  return frontend;
}
