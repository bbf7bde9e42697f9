// Building the page: everything that comes from the API or a charge point is written as text (textContent),
// never parsed as markup, so an id like <img onerror=...> stays a string.

export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function replace(node, ...children) {
  clear(node);
  return append(node, children);
}

const pad = (n) => String(n).padStart(2, "0");

// a UTC date-time as "2025-05-01 12:00:03 UTC" (the API's times are UTC ISO-8601)
export function when(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text);
}

export function online(connected) {
  return badge(connected ? "online" : "offline", connected ? "online" : "offline");
}

// rows: objects; columns: [[heading, row => cell content]]
export function table(columns, rows, { empty = "none", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", {}, heading)))),
    h("tbody", {}, rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {},
      columns.map(([, cell]) => h("td", {}, cell(row)))))));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

export function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error && error.message ? error.message : String(error));
}

// the part of the hash after "?" (#/transactions?charge_point_id=CP-1), as an object
export function params() {
  const index = location.hash.indexOf("?");
  return Object.fromEntries(new URLSearchParams(index >= 0 ? location.hash.slice(index + 1) : ""));
}
