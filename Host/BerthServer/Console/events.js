// The Events page: the event log as it happens (the shell follows /v1/events?watch=true), newest first,
// filterable by kind (the type's first part, e.g. "instance", or a whole type) and by object (the subject).
import { h, replace, table, fmtTime } from "./dom.js";

export const title = "Events";
const SHOWN = 300;

export function mount(main, ctx) {
  const kind = h("select", { id: "ev-kind", "aria-label": "event kind" }, h("option", { value: "" }, "every kind"));
  const object = h("input", { type: "search", id: "ev-object", placeholder: "object, e.g. App/web", "aria-label": "object" });
  const count = h("span", { id: "ev-count", class: "sub" });
  const box = h("div", { id: "events" });
  const kinds = new Set();

  const matches = (e) => {
    const k = kind.value, o = object.value.trim().toLowerCase();
    return (!k || e.type === k || e.type.split(".")[0] === k) && (!o || String(e.subject).toLowerCase().includes(o));
  };
  const row = (e) => h("tr", { "data-rev": e.rev, "data-type": e.type },
    h("td", { class: "num" }, e.rev), h("td", { class: "mono" }, fmtTime(e.time)), h("td", {}, e.type),
    h("td", { class: "name" }, e.subject), h("td", {}, e.actor), h("td", { class: "data mono" }, JSON.stringify(e.data)));
  const addKinds = (evs) => {
    let changed = false;
    for (const e of evs) {
      for (const k of [e.type.split(".")[0], e.type]) if (!kinds.has(k)) { kinds.add(k); changed = true; }
    }
    if (!changed) return;
    const want = kind.value;
    replace(kind, h("option", { value: "" }, "every kind"), [...kinds].sort().map((k) => h("option", { value: k }, k)));
    kind.value = want;
  };
  const render = () => {
    const list = ctx.events.filter(matches);
    const rows = list.slice(-SHOWN).reverse().map(row);
    replace(box, table("events", ["Rev", "Time (UTC)", "Type", "Object", "Actor", "Data"], rows, "no events match"));
    showCount(list.length);
  };
  function showCount(n) {
    count.textContent = `${n} of the last ${ctx.events.length} events match`
      + (ctx.compacted ? " (some events were compacted before the console read them: events.retain)" : "");
  }
  const stop = ctx.onEvents((evs) => {
    addKinds(evs);
    const tbody = box.querySelector("tbody");
    const fresh = evs.filter(matches);
    if (!tbody || !fresh.length || tbody.querySelector("td.empty")) return render();
    for (const e of fresh) tbody.prepend(row(e));
    while (tbody.rows.length > SHOWN) tbody.lastElementChild.remove();
    showCount(ctx.events.filter(matches).length);
  });
  kind.addEventListener("change", render);
  object.addEventListener("input", render);
  addKinds(ctx.events);
  replace(main, h("section", {}, h("h2", {}, "Events"),
    h("div", { class: "row" }, h("label", {}, "Kind ", kind), h("label", {}, "Object ", object), count),
    h("p", { class: "help" }, "Follows the log live (CLI: berth events --watch)."), box));
  render();
  return { unmount: stop };
}
