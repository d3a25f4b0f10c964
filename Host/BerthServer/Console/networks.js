// The Networks page: each network's pools with capacity bars (free / reserved / active / held), seen from all
// nodes or from one node; the attachments with a search; importing a pool from pasted or uploaded JSON, with the
// server's validation error shown next to the field.
import { h, replace, api, enc, action, note, table, fmtTime, stackedBar, liveSection, parseJSON, fieldOf } from "./dom.js";

export const title = "Networks";

export function mount(main) {
  const view = { network: "", node: "" };
  const netSelect = h("select", { id: "net-select", "aria-label": "network" });
  const nodeSelect = h("select", { id: "node-select", "aria-label": "seen from node" }, h("option", { value: "" }, "all nodes"));
  const search = h("input", { type: "search", id: "att-search", placeholder: "search container, node, address", "aria-label": "search attachments" });
  const poolsBox = h("div", { id: "pools" }), attBox = h("div", { id: "attachments" });

  const refresh = liveSection(poolsBox, async () => {
    const nets = (await api("GET", "/v1/networks")).networks || [];
    const nodes = (await api("GET", "/v1/nodes")).nodes || [];
    fillSelect(netSelect, nets.map((n) => n.name), view.network, null);
    fillSelect(nodeSelect, nodes.map((n) => n.name), view.node, "all nodes");
    view.network = netSelect.value;
    view.node = nodeSelect.value;
    if (!view.network) return note("info", "No network plugin is loaded.");
    const netPath = `/v1/networks/${enc(view.network)}`;
    const pools = (await api("GET", `${netPath}/pools`)).pools || [];
    let shown = pools;
    if (view.node) {  // the capacity call says which pools a node may use, with their counts
      const cap = await api("GET", `${netPath}/capacity?node=${enc(view.node)}`);
      const byName = new Map(pools.map((p) => [p.name, p]));
      shown = (cap.pools || []).map((c) => ({ ...byName.get(c.name), ...c }));
    }
    attachments.load();
    return poolCards(shown, view);
  });
  const attachments = attachmentList(attBox, search, () => view.network);
  netSelect.addEventListener("change", () => { view.network = netSelect.value; refresh(); });
  nodeSelect.addEventListener("change", () => { view.node = nodeSelect.value; refresh(); });
  search.addEventListener("input", () => attachments.filter());

  replace(main,
    h("section", {}, h("h2", {}, "Pools"),
      h("div", { class: "row" }, h("label", {}, "Network ", netSelect), h("label", {}, "Seen from ", nodeSelect)), poolsBox),
    h("section", {}, h("h2", {}, "Import a pool"), importForm(() => view.network, refresh)),
    h("section", {}, h("h2", {}, "Attachments"), h("div", { class: "row" }, search), attBox));
  return { refresh };
}

function fillSelect(sel, names, want, allLabel) {
  const have = [...sel.options].map((o) => o.value).join("\n");
  const next = (allLabel !== null ? [""] : []).concat(names);
  if (have !== next.join("\n")) {
    replace(sel, next.map((n) => h("option", { value: n }, n || allLabel)));
  }
  sel.value = next.includes(want) ? want : (next[0] ?? "");
}

function poolCards(pools, view) {
  if (!pools.length) return note("info", view.node ? `No pool of ${view.network} is usable from node ${view.node}.` : `Network ${view.network} has no pools yet.`);
  return h("div", { class: "cards" }, pools.map((p) => h("div", { class: "card pool", "data-pool": p.name },
    h("h3", {}, p.name),
    h("div", { class: "sub" }, [(p.subnets || []).join(", "), p.vlan !== undefined ? `VLAN ${p.vlan}` : "",
      p.nodes ? `nodes: ${p.nodes.join(", ")}` : "all nodes"].filter(Boolean).join(" · ")),
    stackedBar([
      { label: "free", value: p.free, cls: "free" },
      { label: "reserved", value: p.reserved, cls: "reserved" },
      { label: "active", value: p.active, cls: "active" },
      { label: "held", value: p.held, cls: "held" }]))));
}

function attachmentList(box, search, network) {
  let all = [];
  const show = () => {
    const q = search.value.trim().toLowerCase();
    const rows = all.filter((a) => !q || a.text.includes(q)).slice(0, 500).map((a) => a.row);
    replace(box, table("attachments", ["Container", "Interface", "Node", "Addresses", "Pool", "Created"], rows,
      q ? "no attachment matches" : "no attachments"));
  };
  return {
    filter: show,
    async load() {
      const net = network();
      if (!net) return;
      try {
        const list = (await api("GET", `/v1/networks/${enc(net)}/attachments`)).attachments || [];
        all = list.map((a) => {
          const ips = ((a.result && a.result.ips) || []).map((i) => i.address);
          const pool = ((a.result && a.result.ips) || []).map((i) => i.pool).filter(Boolean)[0] || "";
          const cells = [a.containerID, a.ifname, a.node || "-", ips.join(", "), pool, fmtTime(a.created)];
          return { text: cells.join(" ").toLowerCase(), row: h("tr", {}, cells.map((c) => h("td", {}, c))) };
        });
        show();
      } catch (e) { replace(box, note("error", e.lines || [e.message])); }
    },
  };
}

/** Paste or upload a pool (or {"pools": [...]}), as `berth pools import -f FILE`. */
function importForm(network, refresh) {
  const text = h("textarea", { id: "pool-json", rows: 8, spellcheck: "false", "aria-describedby": "pool-error", "aria-label": "pool (JSON)",
    placeholder: '{"name": "blue", "ranges": [{"subnet": "10.20.0.0/24"}], "reserved": ["10.20.0.10"]}' });
  const file = h("input", { type: "file", id: "pool-file", accept: ".json,application/json", "aria-label": "pool file" });
  const err = h("div", { id: "pool-error", class: "field-error", "aria-live": "polite" });
  file.addEventListener("change", async () => {
    if (file.files && file.files[0]) text.value = await file.files[0].text();
  });
  const submit = async () => {
    replace(err);
    text.classList.remove("invalid");
    const net = network();
    let doc;
    try { doc = parseJSON(text.value, "the pool"); } catch (e) { return fail(e.message, null); }
    const pools = Array.isArray(doc && doc.pools) ? doc.pools : [doc];
    const done = [];
    for (const p of pools) {
      try {
        await api("POST", `/v1/networks/${enc(net)}/pools`, p);
        done.push(p && p.name);
      } catch (e) {
        const msg = (e.body && e.body.details && e.body.details.message) || e.message;
        return fail(e.message, fieldOf(msg), done);
      }
    }
    replace(err, note("ok", `Imported into ${net}: ${done.join(", ")}`));
    refresh();
  };
  function fail(message, field, done = []) {
    text.classList.add("invalid");
    replace(err, note("error", done.length ? `Imported ${done.join(", ")}; then:` : null,
      h("span", {}, field ? h("strong", { class: "field" }, `${field}: `) : null, message)));
    if (done.length) refresh();
  }
  return h("div", { class: "card" },
    h("label", { for: "pool-json" }, "Pool JSON (paste, or choose a file)"), text, err,
    h("div", { class: "row" }, file,
      action("Import", `berth pools import --network ${network() || "NET"} -f FILE`, submit, { id: "pool-import", class: "primary" })));
}
