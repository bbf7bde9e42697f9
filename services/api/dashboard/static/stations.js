// #/stations: every station a page at a time, with live online/offline and connector status from the event
// stream (station.*, connector.status_changed); a station that comes online appears without a reload.
import { EventStream, cp, get } from "./api.js";
import { badge, h, online, replace, when, errorBox } from "./dom.js";

const PAGE = 50;
const DETAIL_FETCHES = 6;  // station details read at once

export async function stationsView(ctx, root, params) {
  const stations = new Map();  // id -> {id, connected, session, boot_status, vendor, model, connectors, last_seen, version}
  const tbody = h("tbody", { id: "stations-body" });
  const count = h("span", { class: "muted", id: "stations-count" });
  const pager = h("p", { class: "pager" });
  replace(root,
    h("div", { class: "title" }, h("h1", {}, "Stations"), count),
    h("table", { id: "stations-table", class: "stations" },
      h("thead", {}, h("tr", {}, ["Station", "Connection", "Boot", "Vendor / model", "Connectors", "Last seen"]
        .map((text) => h("th", {}, text)))),
      tbody),
    pager);

  function render(station) {
    const connectors = Object.entries(station.connectors || {})
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([id, c]) => h("span", {
        class: `connector ${String(c.status).toLowerCase()}${c.error_code && c.error_code !== "NoError" ? " fault" : ""}`,
        dataset: { connector: id, status: c.status }, title: c.error_code || "",
      }, `${id}: ${c.status}`));
    const row = h("tr", { dataset: { cp: station.id, connected: String(!!station.connected) } },
      h("td", {}, h("a", { href: `#/station/${encodeURIComponent(station.id)}`, class: "cp-link" }, station.id)),
      h("td", { class: "connection" }, online(station.connected)),
      h("td", {}, station.boot_status ? badge(station.boot_status) : h("span", { class: "muted" }, "not booted")),
      h("td", {}, [station.vendor, station.model].filter(Boolean).join(" ")),
      h("td", { class: "connectors" }, connectors),
      h("td", { class: "muted" }, when(station.last_seen || station.connected_at)));
    const old = station.row;
    station.row = row;
    if (old && old.parentNode) { old.replaceWith(row); return; }
    const after = [...tbody.children].find((tr) => tr.dataset.cp > station.id);
    tbody.insertBefore(row, after || null);
    count.textContent = `${stations.size} shown`;
  }

  function station(id) {
    let found = stations.get(id);
    if (!found) {
      found = { id, connectors: {}, version: 0 };
      stations.set(id, found);
    }
    return found;
  }

  // details (connectors, last seen) of one station; an event that arrived meanwhile wins over what was read
  async function readDetail(entry) {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const version = entry.version;
      let view;
      try {
        view = await get(cp(entry.id), undefined, ctx.signal);
      } catch (error) {
        if (error.status === 404 || error.name === "AbortError") return;
        throw error;
      }
      if (entry.version !== version) continue;
      Object.assign(entry, {
        connected: view.connected, session: view.session, boot_status: view.boot_status, vendor: view.vendor,
        model: view.model, last_seen: view.last_seen, connected_at: view.connected_at,
        connectors: view.connectors || {},
      });
      render(entry);
      return;
    }
  }

  async function readAll(list) {
    const queue = [...list];
    const workers = Array.from({ length: DETAIL_FETCHES }, async () => {
      while (queue.length && ctx.active) await readDetail(queue.shift());
    });
    await Promise.all(workers);
  }

  let loaded = false;
  async function load() {
    const page = await get("/charge-points", { limit: PAGE, after: params.after }, ctx.signal);
    for (const summary of page) {
      const entry = station(summary.charge_point_id);
      Object.assign(entry, { connected: summary.connected, boot_status: summary.boot_status });
      render(entry);
    }
    count.textContent = `${stations.size} shown`;
    replace(pager, page.length === PAGE
      ? h("a", { href: `#/stations?after=${encodeURIComponent(page[page.length - 1].charge_point_id)}`, id: "next-page" },
        "next page")
      : "");
    if (!page.length) tbody.append(h("tr", { class: "none" }, h("td", { colspan: 6, class: "muted" },
      "No station yet: stations appear here as they connect.")));
    loaded = true;
    await readAll([...stations.values()]);
  }

  function onEvent(type, event) {
    const id = event.charge_point_id;
    if (!id) return;
    const placeholder = tbody.querySelector("tr.none");
    if (placeholder) placeholder.remove();
    const known = stations.has(id);
    const entry = station(id);
    entry.version += 1;
    if (type === "station.connected") {
      Object.assign(entry, { connected: true, session: event.session, last_seen: event.occurred_at });
    } else if (type === "station.disconnected") {
      if (entry.session && event.session && entry.session !== event.session) return;  // an older connection
      entry.connected = false;
    } else if (type === "station.booted") {
      Object.assign(entry, { boot_status: event.status, vendor: event.vendor, model: event.model });
    } else if (type === "connector.status_changed") {
      const previous = entry.connectors[event.connector_id];
      const at = event.ordered_at || event.occurred_at;
      if (previous && previous.ordered_at && at && previous.ordered_at > at) return;  // an older status
      entry.connectors[event.connector_id] = { status: event.status, error_code: event.error_code, ordered_at: at };
    } else {
      return;
    }
    render(entry);
    if (!known) readDetail(entry).catch(() => {});
  }

  const stream = new EventStream({
    types: "station.*,connector.status_changed", onEvent,
    onState: (state) => {
      ctx.live(state);
      if (state === "live" && loaded) readAll([...stations.values()]).catch(() => {});
    },
  }).start();
  ctx.onLeave(() => stream.stop());
  try {
    await load();
  } catch (error) {
    if (error.name !== "AbortError") root.append(errorBox(error));
  }
}
