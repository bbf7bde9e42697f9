// #/stations: the stations a page at a time (GET /charge-points with limit and after, the next page from its Link
// header; #/stations?limit=20 sets the page size), with live online/offline and connector status from the event
// stream (station.*, connector.status_changed). A station that comes online appears without a reload: on a page
// that holds the whole network it is added at once; otherwise the page is read again (at most one read at a time),
// so it shows where the API's order puts it, and a page never grows past its size.
import { EventStream, cp, get, page } from "./api.js";
import { badge, h, online, replace, when, errorBox } from "./dom.js";

const PAGE = 50;
const MAX_PAGE = 500;
const DETAIL_FETCHES = 6;  // station details read at once
const REREAD_MS = 300;     // a page is read again at most this often while stations come and go
const previousOf = new Map();  // "<limit> <after>" -> the after of the page before it ("" for the first)

function pageSize(value) {
  const size = Number(value);
  return Number.isInteger(size) && size >= 1 && size <= MAX_PAGE ? size : PAGE;
}

function stationsLink(limit, after) {
  const query = new URLSearchParams();
  if (limit !== PAGE) query.set("limit", String(limit));
  if (after) query.set("after", after);
  return `#/stations${query.toString() ? `?${query}` : ""}`;
}

export async function stationsView(ctx, root, params) {
  const limit = pageSize(params.limit);
  const after = params.after || undefined;
  const stations = new Map();  // id -> {id, connected, session, boot_status, vendor, model, connectors, last_seen, version}
  const tbody = h("tbody", { id: "stations-body" });
  const count = h("span", { class: "muted", id: "stations-count" });
  const pager = h("p", { class: "pager", id: "stations-pager" });
  const finder = h("input", { type: "text", name: "charge_point_id", placeholder: "station id", required: true,
    maxlength: 255, "aria-label": "station id" });
  const find = h("form", { class: "find", id: "find-station" }, finder, h("button", { type: "submit" }, "Open"));
  find.addEventListener("submit", (event) => {
    event.preventDefault();
    if (finder.value.trim()) location.hash = `#/station/${encodeURIComponent(finder.value.trim())}`;
  });
  replace(root,
    h("div", { class: "title" }, h("h1", {}, "Stations"), count, h("span", { class: "spacer" }), find),
    h("table", { id: "stations-table", class: "stations" },
      h("thead", {}, h("tr", {}, ["Station", "Connection", "Boot", "Vendor / model", "Connectors", "Last seen"]
        .map((text) => h("th", {}, text)))),
      tbody),
    pager);
  let next = null;       // the after of the next page (the API's Link header); null: this is the last page
  const whole = () => !after && next === null;  // this page holds every station

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
    const later = [...tbody.children].find((tr) => tr.dataset.cp > station.id);
    tbody.insertBefore(row, later || null);
    counted();
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

  function counted() {
    count.textContent = `${stations.size} on this page`;
  }

  function renderPager(empty) {
    const links = [];
    if (after) {
      links.push(h("a", { href: stationsLink(limit), id: "first-page" }, "first page"));
      const previous = previousOf.get(`${limit} ${after}`);
      if (previous) links.push(h("a", { href: stationsLink(limit, previous), id: "previous-page" }, "previous page"));
    }
    if (next !== null && !empty) {
      previousOf.set(`${limit} ${next}`, after || "");
      links.push(h("a", { href: stationsLink(limit, next), id: "next-page" }, "next page"));
    }
    replace(pager, links.flatMap((link, i) => (i ? [" \u00b7 ", link] : [link])));
  }

  let loaded = false;
  // the page from the API: its stations in the API's order; ones no longer on it (another page now) are dropped
  async function load() {
    const { items, next: following } = await page("/charge-points", { limit, after }, ctx.signal);
    next = following;
    const ids = new Set(items.map((summary) => summary.charge_point_id));
    for (const [id, entry] of stations) {
      if (ids.has(id)) continue;
      stations.delete(id);
      if (entry.row) entry.row.remove();
    }
    const fresh = [];
    for (const summary of items) {
      const known = stations.has(summary.charge_point_id);
      const entry = station(summary.charge_point_id);
      if (!known) {
        Object.assign(entry, { connected: summary.connected, boot_status: summary.boot_status });
        fresh.push(entry);
      }
      render(entry);
      tbody.append(entry.row);  // in the API's order
    }
    const placeholder = tbody.querySelector("tr.none");
    if (placeholder && items.length) placeholder.remove();
    if (!items.length && !placeholder) {
      tbody.append(h("tr", { class: "none" }, h("td", { colspan: 6, class: "muted" }, after
        ? "No more stations." : "No station yet: stations appear here as they connect.")));
    }
    counted();
    renderPager(!items.length);
    loaded = true;
    return fresh;
  }

  // read the page again soon, at most one read at a time (a burst of events is one read, not one each)
  let rereading = null, again = false;
  function rereadSoon() {
    if (rereading) { again = true; return; }
    rereading = new Promise((resolve) => setTimeout(resolve, REREAD_MS))
      .then(() => (ctx.active ? load().then(readAll) : null))
      .catch((error) => { if (error.name !== "AbortError" && ctx.active) console.warn("stations page", error); })
      .finally(() => {
        rereading = null;
        if (again && ctx.active) { again = false; rereadSoon(); }
      });
  }

  function onEvent(type, event) {
    const id = event.charge_point_id;
    if (!id) return;
    const known = stations.has(id);
    if (!known && (!whole() || stations.size >= limit)) {
      // it may belong on this page or another: the API says where
      if (["station.connected", "station.booted", "connector.status_changed"].includes(type)) rereadSoon();
      return;
    }
    const placeholder = tbody.querySelector("tr.none");
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
      if (!known) stations.delete(id);
      return;
    }
    if (placeholder) placeholder.remove();
    render(entry);
    if (!known) readDetail(entry).catch(() => {});
  }

  const stream = new EventStream({
    types: "station.*,connector.status_changed", onEvent,
    onState: (state) => {
      ctx.live(state);
      if (state === "live" && loaded) load().then(readAll).catch(() => {});  // what changed while away
    },
  }).start();
  ctx.onLeave(() => stream.stop());
  try {
    await readAll(await load());
  } catch (error) {
    if (error.name !== "AbortError") root.append(errorBox(error));
  }
}
