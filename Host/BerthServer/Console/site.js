// The Site page: the site's plugins (kind, version, sha256, isolation, state, calls, errors, latency) with enable,
// disable and reload, and a site apply whose dry-run plan and diff are shown before it can be applied.
import { h, replace, api, enc, action, note, table, badge, fmtNum, liveSection, parseJSON, session } from "./dom.js";

export const title = "Site";

export function mount(main, ctx) {
  const messages = new Map();  // plugin name -> note shown under its row (kept across refreshes)
  const pluginsBox = h("div", { id: "plugins" });
  const refresh = liveSection(pluginsBox, async () => pluginTable((await api("GET", "/v1/plugins")).plugins || [], messages, refresh));
  replace(main,
    h("section", {}, h("h2", {}, "Plugins"), pluginsBox),
    h("section", {}, h("h2", {}, "Apply a site configuration"), siteApply(refresh)));
  return { refresh };
}

function stateCell(p) {
  const b = badge(p.state, p.state);
  return p.reason ? h("div", {}, b, h("div", { class: "reason" }, p.reason)) : b;
}

function pluginTable(plugins, messages, refresh) {
  const rows = [];
  for (const p of plugins) {
    const act = async (verb, force) => {
      const q = force ? "?force=true" : "";
      try {
        const j = await api("POST", `/v1/plugins/${enc(p.name)}/${verb}${q}`);
        const done = (j.changes || []).map((c) => `${c.action} ${c.plugin}${c.detail ? ` (${c.detail})` : ""}`);
        messages.set(p.name, note("ok", done.length ? done : [`${verb}: nothing to change`]));
      } catch (e) {
        const lines = e.lines || [e.message];
        const box = note("error", lines);
        if (verb === "disable" && !force && /holds/.test(lines.join(" "))) {
          box.append(action("Disable anyway (force)", `berth plugins disable ${p.name} --force`, () => act("disable", true), { class: "danger" }));
        }
        messages.set(p.name, box);
      }
      refresh();
    };
    const buttons = [];
    if (p.state === "disabled") buttons.push(action("Enable", `berth plugins enable ${p.name}`, () => act("enable")));
    else buttons.push(action("Disable", `berth plugins disable ${p.name}`, () => act("disable")));
    if (p.state !== "disabled") buttons.push(action("Reload", `berth plugins reload ${p.name}`, () => act("reload")));
    rows.push(h("tr", { "data-plugin": p.name, class: `plugin ${p.state}` },
      h("td", { class: "name" }, p.name, p.description ? h("div", { class: "sub" }, p.description) : null),
      h("td", {}, (p.kinds || []).join(", ") || "-"),
      h("td", {}, p.plugin ? `${p.plugin} ${p.version}` : "-", p.abi ? h("div", { class: "sub" }, `ABI ${p.abi}`) : null),
      h("td", { class: "mono", title: p.sha256 || "" }, p.sha256 ? p.sha256.slice(0, 12) : "-"),
      h("td", {}, p.isolation, p.crashes ? h("div", { class: "sub" }, `${p.crashes} crashes`) : null),
      h("td", { class: "state" }, stateCell(p)),
      h("td", { class: "num" }, fmtNum(p.calls)),
      h("td", { class: "num" }, fmtNum(p.errors)),
      h("td", { class: "num" }, p.meanLatencyMicros === undefined ? "-" : `${p.meanLatencyMicros} µs`),
      h("td", { class: "actions" }, buttons)));
    if (messages.has(p.name)) {
      rows.push(h("tr", { class: "message", "data-message-for": p.name },
        h("td", { colspan: 10 }, messages.get(p.name), h("button", { type: "button", class: "link",
          onclick: () => { messages.delete(p.name); refresh(); } }, "dismiss"))));
    }
  }
  return table("plugins", ["Name", "Kinds", "Plugin", "SHA-256", "Isolation", "State", "Calls", "Errors", "Latency", ""], rows, "no plugins");
}

/** The site JSON to edit: GET /v1/site. The token is shown as "(set)" and put back only when sending. */
function siteApply(refreshPlugins) {
  const text = h("textarea", { id: "site-json", rows: 16, spellcheck: "false", "aria-label": "site configuration (JSON)" });
  const force = h("input", { type: "checkbox", id: "site-force" });
  const out = h("div", { id: "site-result" });
  let current = "", planned = null;
  const applyBtn = action("Apply", "berth site apply -f FILE", () => run(false), { id: "site-apply", disabled: true, class: "primary" });
  const load = async () => {
    try {
      current = JSON.stringify(await api("GET", "/v1/site"), null, 2);
      text.value = current;
      planned = null; applyBtn.disabled = true;
      replace(out);
    } catch (e) { replace(out, note("error", e.lines || [e.message])); }
  };
  text.addEventListener("input", () => { applyBtn.disabled = text.value !== planned; });
  force.addEventListener("change", () => { applyBtn.disabled = true; planned = null; });

  async function run(dryRun) {
    let doc;
    try { doc = parseJSON(text.value, "the site configuration"); } catch (e) { return replace(out, note("error", e.message)); }
    if (doc && doc.api && doc.api.token === "(set)") doc.api.token = session.token;  // the running token, unchanged
    const q = [dryRun ? "dryRun=true" : "", force.checked ? "force=true" : ""].filter(Boolean).join("&");
    try {
      const j = await api("PUT", `/v1/site${q ? `?${q}` : ""}`, doc);
      const changes = j.changes || [];
      const moving = changes.filter((c) => c.action !== "unchanged");
      if (dryRun) {
        planned = text.value;
        applyBtn.disabled = false;
        replace(out, note("info", moving.length ? `Dry run: ${moving.length} change(s) would be made.` : "Dry run: nothing would change."),
          planTable(changes), h("h3", {}, "Diff against the running configuration"), lineDiff(current, text.value));
      } else {
        applyBtn.disabled = true;
        replace(out, note("ok", moving.length ? `Applied: ${moving.length} change(s).` : "Applied: nothing changed."), planTable(changes));
        current = JSON.stringify(await api("GET", "/v1/site"), null, 2);
        refreshPlugins();
      }
    } catch (e) {
      planned = null; applyBtn.disabled = true;
      replace(out, note("error", e.lines || [e.message]));
    }
  }
  load();
  return h("div", { class: "card" },
    h("p", { class: "help" }, "Edit the running configuration, look at the dry run's plan and diff, then apply. ",
      "Everything is validated first; if anything is wrong nothing changes. The token stays \"(set)\": the console sends the one you logged in with."),
    text,
    h("div", { class: "row" },
      h("label", {}, force, " force (disable plugins that still hold state)"),
      action("Reload from server", "berth site show", load),
      action("Dry run", "berth site apply -f FILE --dry-run", () => run(true), { id: "site-dry-run" }),
      applyBtn),
    out);
}

function planTable(changes) {
  return table("plan", ["Action", "Plugin", "Detail"], changes.map((c) =>
    h("tr", { class: `change ${c.action}` }, h("td", {}, badge(c.action, c.action)), h("td", {}, c.plugin), h("td", {}, c.detail || ""))),
    "no plugins");
}

/** A line diff (longest common subsequence) of two texts, as + and - lines. */
function lineDiff(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  if (x.length * y.length > 4e6) return note("info", "Too large to diff here.");
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const lines = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { lines.push([" ", x[i]]); i++; j++; }
    else if (i < n && (j === m || L[i + 1][j] >= L[i][j + 1])) lines.push(["-", x[i++]]);
    else lines.push(["+", y[j++]]);
  }
  if (!lines.some((l) => l[0] !== " ")) return note("info", "The text is the same as the running configuration.");
  // Only changed lines with two lines of context around them.
  const keep = lines.map((l, k) => lines.slice(Math.max(0, k - 2), k + 3).some((c) => c[0] !== " "));
  return h("pre", { class: "diff", id: "site-diff" }, lines.map((l, k) => keep[k]
    ? h("div", { class: l[0] === "+" ? "add" : l[0] === "-" ? "del" : "ctx" }, `${l[0]} ${l[1]}`)
    : (keep[k - 1] ? h("div", { class: "gap" }, "…") : null)));
}
