// The console's shell: the token login (kept in sessionStorage for this browser session only), the navigation
// between pages, and the one live event stream (/v1/events?watch=true) that keeps the open page current.
import { h, replace, api, session, note, setUnauthorizedHandler, APIError } from "./dom.js";
import * as site from "./site.js";
import * as networks from "./networks.js";
import * as workloads from "./workloads.js";
import * as storage from "./storage.js";
import * as events from "./events.js";

const pages = { site, networks, workloads, storage, events };
const root = document.getElementById("app");
const KEEP = 2000;  // events kept in memory for the Events page

const state = { events: [], rev: 0, compacted: false, listeners: new Set(), page: null, pageName: "", stream: null, live: null, siteName: "" };

function loginView(message) {
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    placeholder: "api.token of the site", "aria-label": "bearer token" });
  const form = h("form", { id: "login", class: "card login" },
    h("h1", {}, "Berth console"),
    h("p", {}, "Enter the site's API token (api.token). It is kept for this browser session only."),
    message ? note("error", message) : null,
    h("label", { for: "token" }, "Token"), input,
    h("button", { type: "submit", id: "login-submit" }, "Log in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    try {
      await api("GET", "/v1/site", undefined, { token: t });
      session.token = t;
      start();
    } catch (e) {
      const why = e instanceof APIError && e.status === 401 ? `The token was refused: ${e.message}` : `Cannot reach berthd: ${e.message}`;
      replace(root, loginView(why));
    }
  });
  setTimeout(() => input.focus(), 0);
  return form;
}

function logout(message) {
  session.token = null;
  if (state.page && state.page.unmount) state.page.unmount();
  state.page = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.events = [];
  state.rev = 0;
  state.compacted = false;
  replace(root, loginView(message));
}

function shell() {
  const nav = h("nav", { id: "nav" }, Object.keys(pages).map((p) =>
    h("a", { href: `#/${p}`, id: `nav-${p}`, "data-page": p }, pages[p].title)));
  state.live = h("span", { id: "live", class: "live off", title: "the event stream (GET /v1/events?watch=true)" }, "connecting");
  const header = h("header", {},
    h("span", { class: "brand" }, "Berth"), h("span", { id: "site-name", class: "site" }, state.siteName), nav,
    h("span", { class: "right" }, state.live,
      h("button", { type: "button", id: "logout", title: "forget the token in this browser session", onclick: () => logout() }, "Log out")));
  return [header, h("main", { id: "page" })];
}

function show() {
  const asked = (location.hash.replace(/^#\/?/, "") || "site").split("?")[0];
  const name = Object.hasOwn(pages, asked) ? asked : "site";
  const mod = pages[name];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const main = document.getElementById("page");
  if (!main) return;
  if (state.page && state.page.unmount) state.page.unmount();
  state.pageName = name;
  state.page = mod.mount(main, ctx);
  document.title = `Berth · ${mod.title}`;
}

/** What pages get: the event history and a way to hear new events. */
const ctx = {
  get events() { return state.events; },
  /** True once the console missed events that the log no longer keeps. */
  get compacted() { return state.compacted; },
  onEvents(f) { state.listeners.add(f); return () => state.listeners.delete(f); },
};

function setLive(on, text) {
  if (!state.live) return;
  state.live.className = `live ${on ? "on" : "off"}`;
  state.live.textContent = text;
}

function deliver(evs) {
  evs = evs.filter((e) => typeof e.rev === "number" && e.rev > state.rev && typeof e.type === "string");
  if (!evs.length) return;
  state.events.push(...evs);
  if (state.events.length > KEEP) state.events.splice(0, state.events.length - KEEP);
  state.rev = evs[evs.length - 1].rev;
  for (const f of state.listeners) f(evs);
  if (state.page && state.page.refresh) state.page.refresh();
}

/** One page of the log after state.rev. A cursor older than what the log keeps (410, events.retain) starts over
 *  from the oldest event kept: the events in between are gone, and the Events page says so. */
async function readPage(signal) {
  try {
    return (await api("GET", `/v1/events?since=${state.rev}&limit=10000`, undefined, { signal })).events || [];
  } catch (e) {
    if (!(e instanceof APIError) || e.status !== 410) throw e;
    state.compacted = true;
    return (await api("GET", "/v1/events?since=0&limit=10000", undefined, { signal })).events || [];
  }
}

/** Reads the log up to now, then follows it; reconnects after a failure. */
async function follow(ctrl) {
  while (!ctrl.signal.aborted) {
    try {
      for (;;) {  // history first, a page at a time
        const evs = await readPage(ctrl.signal);
        deliver(evs);
        if (evs.length < 10000) break;
      }
      const r = await fetch(`/v1/events?watch=true&since=${state.rev}`, {
        headers: { Authorization: `Bearer ${session.token}` }, signal: ctrl.signal });
      if (r.status === 401) return logout("The token was refused by the event stream.");
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      setLive(true, "live");
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        const lines = buf.split("\n");
        buf = lines.pop();
        const evs = lines.filter((l) => l.trim()).map((l) => JSON.parse(l));
        deliver(evs);
        const err = evs.find((e) => e.error);  // the stream's last line when compaction overtook it
        if (err) throw new Error(err.error);
      }
      throw new Error("stream ended");
    } catch (e) {
      if (ctrl.signal.aborted) return;
      setLive(false, "reconnecting");
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
}

async function start() {
  try {
    state.siteName = (await api("GET", "/v1/site")).site || "";
  } catch (e) {
    return logout(e.status === 401 ? `The token was refused: ${e.message}` : `Cannot reach berthd: ${e.message}`);
  }
  replace(root, shell());
  show();
  state.stream = new AbortController();
  follow(state.stream);
}

setUnauthorizedHandler((body) => logout(`The token was refused: ${(body && body.error) || "401"}`));
window.addEventListener("hashchange", () => { if (session.token && state.stream) show(); });
// Refresh what is shown now and then even without events (call counts and latencies change without events).
setInterval(() => { if (state.page && state.page.refresh && !document.hidden) state.page.refresh(); }, 10000);
if (session.token) start(); else replace(root, loginView());
