// The console's helpers: elements built from text nodes only (no innerHTML anywhere, so a server string can never
// become markup), the API client that sends the session's bearer token, and small SVG charts.

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "berth.console.token";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "style" || k === "innerHTML") throw new Error(`h(): "${k}" is not allowed`);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h("td", {class: "x"}, "text", child, ...). Strings become text nodes. */
export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
/** An SVG element. */
export const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG, tag), attrs, children);

export function replace(el, ...children) {
  el.replaceChildren();
  return build(el, {}, children);
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(t) { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); },
};

/** An error answer of the API: status, the message and the whole JSON body. */
export class APIError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
  /** Every line the server gave: the message, then each listed problem. */
  get lines() {
    const p = Array.isArray(this.body.problems) ? this.body.problems.map(String) : [];
    return p.length ? [p.length > 1 ? "The server refused it:" : this.message.split("\n")[0], ...p] : [this.message];
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

/** Calls the REST API with the session's token; resolves to the parsed JSON or throws an APIError. */
export async function api(method, path, body, opts = {}) {
  const token = opts.token ?? session.token;
  if (!token) throw new APIError(401, { error: "no token: log in first" });
  const headers = { Authorization: `Bearer ${token}`, "X-Berth-Actor": "console" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: opts.signal });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : {}; } catch { json = { error: text.trim() || `HTTP ${r.status}` }; }
  if (!r.ok) {
    if (r.status === 401 && !opts.token) onUnauthorized(json);
    throw new APIError(r.status, json);
  }
  return json;
}

export const enc = encodeURIComponent;

/** A button for an action, naming the equivalent CLI command in its tooltip. */
export function action(label, cli, onclick, attrs = {}) {
  return h("button", { type: "button", title: `CLI: ${cli}`, "data-cli": cli, onclick, ...attrs }, label);
}

/** A message box: kind is "error", "ok" or "info"; lines are text. */
export function note(kind, ...lines) {
  return h("div", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status" },
    lines.flat().filter((l) => l !== null && l !== undefined).map((l) => h("div", {}, l)));
}

export function table(cls, headers, rows, empty = "none") {
  return h("div", { class: "scroll" },
    h("table", { class: cls },
      h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty)))));
}

export const badge = (text, kind) => h("span", { class: `badge ${kind || text}` }, text);

export function fmtNum(n) {
  if (typeof n !== "number") return n === undefined || n === null ? "-" : String(n);
  return n >= 1e15 ? n.toExponential(2) : n.toLocaleString("en");
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function fmtTime(t) {
  return typeof t === "number" ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";
}

/**
 * A horizontal stacked bar in SVG: segments [{label, value, cls}], drawn proportionally to their sum (or total).
 * The legend below it gives the figures, so the chart is never the only place a number is shown.
 */
export function stackedBar(segments, opts = {}) {
  const total = opts.total ?? segments.reduce((a, s) => a + Math.max(0, s.value || 0), 0);
  const w = 300, hgt = opts.height ?? 14;
  const bar = svg("svg", { class: "bar", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img",
    "aria-label": segments.map((s) => `${s.label} ${s.value}`).join(", ") });
  bar.append(svg("rect", { x: 0, y: 0, width: w, height: hgt, class: "bar-bg" }));
  let x = 0;
  for (const s of segments) {
    const sw = total > 0 ? (Math.max(0, s.value || 0) / total) * w : 0;
    if (sw > 0) bar.append(svg("rect", { x, y: 0, width: sw, height: hgt, class: `seg ${s.cls}` }, svg("title", {}, `${s.label}: ${fmtNum(s.value)}`)));
    x += sw;
  }
  if (opts.legend === false) return bar;
  return h("div", { class: "barbox" }, bar,
    h("div", { class: "legend" }, segments.map((s) => h("span", { class: `key ${s.cls}` }, `${s.label} ${(opts.fmt || fmtNum)(s.value)}`))));
}

/** Debounces f: one call after `ms` of quiet. */
export function debounce(f, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

/** Parses JSON text, throwing an Error that says where it broke. */
export function parseJSON(text, what) {
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON: ${e.message}`); }
}

/**
 * The field a server message names, for showing next to the input: a path such as "ranges[0].subnet" or
 * "spec.replicas" (after a leading "pool NAME: "), or "name" when the message is about the name. Null if none.
 */
export function fieldOf(message) {
  const m = String(message).replace(/^pool [^:]*: /, "");
  const p = /([A-Za-z]\w*(?:\[\d+\])+(?:\.\w+(?:\[\d+\])*)*|[A-Za-z]\w*(?:\.[A-Za-z]\w*(?:\[\d+\])*)+)/.exec(m);
  if (p) return p[1];
  return /\bname\b/.test(m) ? "name" : null;
}

/**
 * The data part of a page: `load()` fetches and returns the nodes to show; they replace the section's content.
 * refresh() is debounced (events come in bursts); a failure is shown in place of the data, not thrown.
 */
export function liveSection(el, load) {
  let running = false, again = false;
  async function run() {
    if (running) { again = true; return; }
    running = true;
    try { replace(el, await load()); } catch (e) { replace(el, note("error", e.lines || [e.message])); }
    running = false;
    if (again) { again = false; run(); }
  }
  run();
  return debounce(run, 250);
}
