// The Workloads page: nodes (capacity, allocation, labels, state) with drain / down / up; apps of every kind with
// their instances (state, node, IP, volume; a pending instance shows the scheduler's reason); applying objects.
import { h, replace, api, enc, action, note, table, badge, fmtNum, fmtBytes, stackedBar, liveSection, parseJSON, fieldOf } from "./dom.js";

export const title = "Workloads";

export function mount(main) {
  const nodesBox = h("div", { id: "nodes" }), appsBox = h("div", { id: "apps" }), instBox = h("div", { id: "instances" });
  const stateFilter = h("select", { id: "inst-state", "aria-label": "instance state" },
    ["", "pending", "placed", "running", "terminating"].map((s) => h("option", { value: s }, s || "every state")));
  const msg = h("div", { id: "node-message" });
  const refreshNodes = liveSection(nodesBox, async () => nodeTable((await api("GET", "/v1/nodes")).nodes || [], msg, () => refresh()));
  const refreshApps = liveSection(appsBox, async () => {
    const kinds = (await api("GET", "/v1/kinds")).kinds || [];
    const lists = await Promise.all(kinds.map((k) => api("GET", `/v1/kinds/${enc(k.kind)}`)));
    return appTable(lists.flatMap((l) => l.items || []));
  });
  const refreshInst = liveSection(instBox, async () => {
    const q = stateFilter.value ? `?state=${enc(stateFilter.value)}` : "";
    return instanceTable((await api("GET", `/v1/instances${q}`)).instances || []);
  });
  const refresh = () => { refreshNodes(); refreshApps(); refreshInst(); };
  stateFilter.addEventListener("change", refreshInst);
  replace(main,
    h("section", {}, h("h2", {}, "Nodes"), msg, nodesBox),
    h("section", {}, h("h2", {}, "Apps"), appsBox),
    h("section", {}, h("h2", {}, "Instances"), h("div", { class: "row" }, h("label", {}, "Show ", stateFilter)), instBox),
    h("section", {}, h("h2", {}, "Apply objects"), applyForm(refresh)));
  return { refresh };
}

function usage(label, used, cap, fmt) {
  if (!cap) return h("div", { class: "sub" }, `${label}: ${fmt(used)} used, no capacity`);
  return h("div", { class: "usage" }, h("div", { class: "sub" }, `${label} ${fmt(used)} / ${fmt(cap)}`),
    stackedBar([{ label: "used", value: used, cls: "active" }, { label: "free", value: Math.max(0, cap - used), cls: "free" }], { legend: false, height: 8 }));
}

function nodeTable(nodes, msg, refresh) {
  const verb = (name, v, warn) => async () => {
    if (warn && !window.confirm(`${v} node ${name}? ${warn}`)) return;
    try {
      const j = await api("POST", `/v1/nodes/${enc(name)}/${v}`);
      replace(msg, note("ok", `node ${name} is ${j.state}${j.evicted ? `; ${j.evicted} instance(s) are being rescheduled` : ""}`));
    } catch (e) { replace(msg, note("error", e.lines || [e.message])); }
    refresh();
  };
  const millis = (m) => `${fmtNum(m / 1000)} CPU`;
  return table("nodes", ["Name", "State", "Labels", "Capacity", "Instances", ""], nodes.map((n) => h("tr", { "data-node": n.name },
    h("td", { class: "name" }, n.name),
    h("td", {}, badge(n.state, n.state)),
    h("td", { class: "labels" }, Object.entries(n.labels || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))),
    h("td", { class: "capacity" }, usage("cpu", n.allocated.cpu, n.capacity.cpu, millis),
      usage("memory", n.allocated.memory, n.capacity.memory, fmtBytes)),
    h("td", { class: "num" }, fmtNum(n.allocated.instances)),
    h("td", { class: "actions" },
      n.state === "up" ? action("Drain", `berth nodes drain ${n.name}`, verb(n.name, "drain", "Its instances move elsewhere.")) : null,
      n.state !== "down" ? action("Down", `berth nodes down ${n.name}`, verb(n.name, "down", "It is marked lost; its instances are rescheduled."), { class: "danger" }) : null,
      n.state !== "up" ? action("Up", `berth nodes up ${n.name}`, verb(n.name, "up")) : null))), "no nodes: add one with berth nodes add");
}

function appTable(items) {
  return table("apps", ["Kind", "Name", "Replicas", "Pending", "Placed", "Running", "Description"], items.map((o) => h("tr", { "data-app": o.name },
    h("td", {}, o.kind), h("td", { class: "name" }, o.name),
    h("td", { class: "num" }, fmtNum(o.status.replicas)), h("td", { class: "num" }, fmtNum(o.status.pending)),
    h("td", { class: "num" }, fmtNum(o.status.placed)), h("td", { class: "num" }, fmtNum(o.status.running)),
    h("td", { class: "desc" }, (o.spec && o.spec.description) || ""))), "no apps: apply one below (berth apply -f FILE)");
}

function instanceTable(list) {
  return table("instances", ["Instance", "Kind", "State", "Node", "IP", "Volumes", "Why"], list.map((i) => h("tr", {
    "data-instance": `${i.kind}/${i.app}/${i.ordinal}`, class: `instance ${i.state}` },
  h("td", { class: "name" }, i.name), h("td", {}, i.kind), h("td", {}, badge(i.state, i.state)),
  h("td", {}, i.node || "-"), h("td", { class: "mono" }, (i.ips || []).join(", ") || "-"),
  h("td", {}, (i.volumes || []).map((v) => h("div", { title: v.target }, `${v.template}: ${v.volumeId}${v.node ? ` @${v.node}` : ""}`))),
  h("td", { class: i.state === "pending" ? "reason pending" : "reason" }, i.reason || ""))), "no instances");
}

/** One object, an array, or {"items": [...]}, as `berth apply -f FILE`: {kind, name, spec}, or {kind: "Node", name, capacity, labels}. */
function applyForm(refresh) {
  const text = h("textarea", { id: "apply-json", rows: 8, spellcheck: "false", "aria-describedby": "apply-error", "aria-label": "objects (JSON)",
    placeholder: '{"kind": "App", "name": "web", "spec": {"replicas": 2, "resources": {"cpu": "250m"}, "network": {"name": "default"}}}' });
  const err = h("div", { id: "apply-error", class: "field-error", "aria-live": "polite" });
  const submit = async () => {
    replace(err);
    text.classList.remove("invalid");
    let doc;
    try { doc = parseJSON(text.value, "the objects"); } catch (e) { return fail(e.message, null, []); }
    const items = Array.isArray(doc) ? doc : Array.isArray(doc && doc.items) ? doc.items : [doc];
    const done = [];
    for (const [i, it] of items.entries()) {
      if (!it || typeof it.kind !== "string" || typeof it.name !== "string") return fail(`item ${i}: "kind" and "name" are required`, "kind", done);
      const { kind, ...rest } = it;
      const path = kind === "Node" ? `/v1/nodes/${enc(it.name)}` : `/v1/kinds/${enc(kind)}/${enc(it.name)}`;
      try { await api("PUT", path, kind === "Node" ? rest : it); done.push(`${kind.toLowerCase()}/${it.name}`); } catch (e) {
        return fail(e.message, fieldOf(e.message), done);
      }
    }
    replace(err, note("ok", `Applied: ${done.join(", ")}`));
    refresh();
  };
  function fail(message, field, done) {
    text.classList.add("invalid");
    replace(err, note("error", done.length ? `Applied ${done.join(", ")}; then:` : null,
      h("span", {}, field ? h("strong", { class: "field" }, `${field}: `) : null, message)));
    if (done.length) refresh();
  }
  return h("div", { class: "card" }, h("label", { for: "apply-json" }, "Objects (JSON)"), text, err,
    h("div", { class: "row" }, action("Apply", "berth apply -f FILE", submit, { id: "apply-submit", class: "primary" })));
}
