// A small stand-in for the browser's document, enough for the front-end modules' tests
// (elements, text, classes, attributes, events, a few selectors). installDom() puts it on
// globalThis.document; the modules read `document` only when they run.

class FakeText {
  constructor(text) {
    this.textContent = String(text);
    this.parentNode = null;
  }
}

export class FakeElement {
  constructor(tag, doc) {
    this.tagName = tag.toUpperCase();
    this.ownerDocument = doc;
    this.childNodes = [];
    this.parentNode = null;
    this.attributes = {};
    this.style = {};
    this.listeners = {};
    this.className = "";
    this.value = "";
    this.checked = false;
    this.disabled = false;
  }

  get children() {
    return this.childNodes.filter((c) => c instanceof FakeElement);
  }

  get childElementCount() {
    return this.children.length;
  }

  get classList() {
    const names = () => this.className.split(/\s+/).filter(Boolean);
    return {
      contains: (n) => names().includes(n),
      add: (n) => { if (!names().includes(n)) this.className = [...names(), n].join(" "); },
      remove: (n) => { this.className = names().filter((x) => x !== n).join(" "); },
      toggle: (n, on = !names().includes(n)) => { on ? this.classList.add(n) : this.classList.remove(n); return on; },
    };
  }

  get textContent() {
    return this.childNodes.map((c) => c.textContent).join("");
  }

  set textContent(text) {
    this.replaceChildren(new FakeText(text));
  }

  get isConnected() {
    let node = this;
    while (node.parentNode) node = node.parentNode;
    return node === this.ownerDocument.root;
  }

  setAttribute(name, value) {
    this.attributes[name] = String(value);
    if (name === "id") this.id = String(value);
  }

  getAttribute(name) {
    return this.attributes[name] ?? null;
  }

  append(...nodes) {
    for (const node of nodes) {
      const child = typeof node === "object" ? node : new FakeText(node);
      child.parentNode?.childNodes.splice(child.parentNode.childNodes.indexOf(child), 1);
      child.parentNode = this;
      this.childNodes.push(child);
    }
  }

  replaceChildren(...nodes) {
    for (const child of this.childNodes) child.parentNode = null;
    this.childNodes = [];
    this.append(...nodes);
  }

  remove() {
    if (!this.parentNode) return;
    this.parentNode.childNodes.splice(this.parentNode.childNodes.indexOf(this), 1);
    this.parentNode = null;
  }

  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }

  removeEventListener(type, fn) {
    this.listeners[type] = (this.listeners[type] ?? []).filter((f) => f !== fn);
  }

  dispatch(type, extra = {}) {
    const event = { type, target: this, preventDefault() {}, stopPropagation() {}, ...extra };
    for (const fn of this.listeners[type] ?? []) fn(event);
    return event;
  }

  click() {
    return this.dispatch("click");
  }

  select() {}

  /** Every element below this one, depth first. */
  descendants() {
    return this.children.flatMap((c) => [c, ...c.descendants()]);
  }

  /** ".class", "tag", "tag.class" or "[name=value]" only. */
  querySelectorAll(selector) {
    return this.descendants().filter((e) => e.matches(selector));
  }

  querySelector(selector) {
    return this.querySelectorAll(selector)[0] ?? null;
  }

  matches(selector) {
    const attr = /^\[([\w-]+)="?([^"\]]*)"?\]$/.exec(selector);
    if (attr) return this.attributes[attr[1]] === attr[2];
    const [tag, ...classes] = selector.split(".");
    if (tag && this.tagName !== tag.toUpperCase()) return false;
    return classes.every((c) => this.classList.contains(c));
  }
}

export class FakeDocument {
  constructor() {
    this.root = new FakeElement("html", this);
    this.head = new FakeElement("head", this);
    this.body = new FakeElement("body", this);
    this.root.append(this.head, this.body);
    this.listeners = {};
  }

  createElement(tag) {
    return new FakeElement(tag, this);
  }

  createTextNode(text) {
    return new FakeText(text);
  }

  getElementById(id) {
    return this.root.descendants().find((e) => e.id === id) ?? null;
  }

  querySelector(selector) {
    return this.root.querySelector(selector);
  }

  querySelectorAll(selector) {
    return this.root.querySelectorAll(selector);
  }

  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }

  removeEventListener(type, fn) {
    this.listeners[type] = (this.listeners[type] ?? []).filter((f) => f !== fn);
  }
}

export function installDom() {
  const doc = new FakeDocument();
  globalThis.document = doc;
  return doc;
}

/** Lets pending promise callbacks (a route's answer) run. */
export const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
