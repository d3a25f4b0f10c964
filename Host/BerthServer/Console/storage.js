// The Storage page: each storage plugin's capacity, its volumes with their publish state (nodes, staging,
// targets) and its snapshots. Read-only: volumes are created and published by `berth volumes` or by apps.
import { h, replace, api, enc, note, table, badge, fmtBytes, fmtTime, stackedBar, liveSection } from "./dom.js";

export const title = "Storage";

export function mount(main) {
  const box = h("div", { id: "storage" });
  const refresh = liveSection(box, async () => {
    const plugins = (await api("GET", "/v1/storage")).plugins || [];
    if (!plugins.length) return note("info", "No storage plugin is loaded.");
    return Promise.all(plugins.map(pluginSection));
  });
  replace(main, h("section", {}, h("h2", {}, "Storage"), box));
  return { refresh };
}

async function pluginSection(p) {
  const base = `/v1/storage/${enc(p.name)}`;
  const caps = p.capabilities || [];
  const [cap, vols, snaps] = await Promise.all([
    caps.includes("capacity") ? api("GET", `${base}/capacity`).catch(() => null) : null,
    api("GET", `${base}/volumes?limit=1000`),
    caps.includes("snapshots") ? api("GET", `${base}/snapshots?limit=1000`) : { snapshots: [] },
  ]);
  const more = vols.nextPageToken || snaps.nextPageToken ? note("info", "Showing the first 1,000; `berth volumes list` shows every one.") : null;
  return h("div", { class: "card storage", "data-storage": p.name },
    h("h3", {}, p.name, " ", h("span", { class: "sub" }, `${p.plugin || ""} ${p.version || ""} · ${caps.join(", ")}`)),
    cap && typeof cap.totalCapacity === "number"
      ? stackedBar([{ label: "used", value: cap.usedBytes ?? cap.totalCapacity - cap.availableCapacity, cls: "active" },
        { label: "available", value: cap.availableCapacity, cls: "free" }], { total: cap.totalCapacity, fmt: fmtBytes })
      : null,
    h("h4", {}, "Volumes"), volumeTable(vols.volumes || []),
    h("h4", {}, "Snapshots"), snapshotTable(snaps.snapshots || []), more);
}

function volumeTable(list) {
  return table("volumes", ["Name", "Volume", "Size", "Mode", "Published", "Nodes and targets"], list.map((v) => h("tr", { "data-volume": v.volumeId },
    h("td", { class: "name" }, v.name), h("td", { class: "mono" }, v.volumeId), h("td", { class: "num" }, fmtBytes(v.capacityBytes)),
    h("td", {}, `${v.accessMode}, ${v.volumeMode}`),
    h("td", {}, badge(v.published ? "published" : "unpublished", v.published ? "loaded" : "disabled")),
    h("td", {}, (v.nodes || []).map((n) => h("div", {}, `${n.node}${n.staged ? " (staged)" : ""}${n.readonly ? " ro" : ""}: `,
      (n.targets || []).map((t) => t.target).join(", ") || "no target"))))), "no volumes");
}

function snapshotTable(list) {
  return table("snapshots", ["Name", "Snapshot", "Source volume", "Size", "Ready", "Created"], list.map((s) => h("tr", {},
    h("td", { class: "name" }, s.name), h("td", { class: "mono" }, s.snapshotId), h("td", { class: "mono" }, s.sourceVolumeId),
    h("td", { class: "num" }, fmtBytes(s.sizeBytes)), h("td", {}, s.readyToUse === false ? "no" : "yes"), h("td", {}, fmtTime(s.created)))),
  "no snapshots");
}
