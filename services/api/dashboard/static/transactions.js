// #/transactions: transactions a page at a time (by station, in progress only); #/transaction/<id>: one
// transaction with its meter values as a chart that starts at its meterStart and grows as readings arrive
// (meter.values events).
import { EventStream, all, get } from "./api.js";
import { lineChart } from "./charts.js";
import { badge, errorBox, h, params as hashParams, replace, section, table, when } from "./dom.js";

const PAGE = 50;
const MAX_READINGS = 10000;  // meter values drawn at most

export async function transactionsView(ctx, root, params) {
  const stationInput = h("input", { type: "text", name: "charge_point_id", value: params.charge_point_id || "",
    placeholder: "all stations" });
  const activeOnly = h("input", { type: "checkbox", name: "active", checked: params.active === "1" });
  const filters = h("form", { class: "filters" }, h("label", { class: "field" }, h("span", {}, "station"), stationInput),
    h("label", { class: "inline" }, activeOnly, " in progress only"), h("button", { type: "submit" }, "Show"));
  const box = h("div", { id: "transactions" });
  replace(root, h("h1", {}, "Transactions"), filters, box);
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (stationInput.value.trim()) query.set("charge_point_id", stationInput.value.trim());
    if (activeOnly.checked) query.set("active", "1");
    location.hash = `#/transactions${query.toString() ? `?${query}` : ""}`;
  });
  const page = await get("/transactions", { charge_point_id: params.charge_point_id, active_only: params.active === "1" || undefined,
    limit: PAGE, after: params.after }, ctx.signal);
  const next = new URLSearchParams(hashParams());
  if (page.length) next.set("after", page[page.length - 1].transaction_id);
  replace(box, table([
    ["transaction", (t) => h("a", { href: `#/transaction/${t.transaction_id}`, class: "tx-link" }, String(t.transaction_id))],
    ["station", (t) => h("a", { href: `#/station/${encodeURIComponent(t.charge_point_id)}` }, t.charge_point_id)],
    ["connector", (t) => t.connector_id], ["id tag", (t) => t.id_tag], ["started", (t) => when(t.start)],
    ["status", (t) => badge(t.status)], ["energy", (t) => t.energy_wh !== null && t.energy_wh !== undefined
      ? `${t.energy_wh} Wh` : `${(t.meter_last ?? t.meter_start) - t.meter_start} Wh so far`],
  ], page, { empty: "no transaction", rowAttrs: (t) => ({ dataset: { transaction: t.transaction_id } }) }),
  page.length === PAGE ? h("p", { class: "pager" }, h("a", { href: `#/transactions?${next}` }, "next page")) : "");
}

// the energy register in Wh from a reading's sampled values (Energy.Active.Import.Register, Wh or kWh)
export function energyWh(sampledValues) {
  for (const s of sampledValues || []) {
    const measurand = s.measurand || "Energy.Active.Import.Register";
    if (measurand !== "Energy.Active.Import.Register" || (s.phase && s.phase !== "")) continue;
    const value = Number(s.value);
    if (!Number.isFinite(value)) continue;
    return s.unit === "kWh" ? value * 1000 : value;
  }
  return null;
}

function power(sampledValues) {
  for (const s of sampledValues || []) {
    if (s.measurand !== "Power.Active.Import" || s.phase) continue;
    const value = Number(s.value);
    if (Number.isFinite(value)) return s.unit === "kW" ? value * 1000 : value;
  }
  return null;
}

export async function transactionView(ctx, root, id) {
  const head = h("div", { id: "transaction-head", class: "panel" });
  const chartBox = h("div", { id: "meter-chart" });
  const powerBox = h("div", { id: "power-chart" });
  const readingsBox = h("div", { id: "readings" });
  replace(root, h("p", { class: "crumbs" }, h("a", { href: "#/transactions" }, "Transactions"), " / ", String(id)),
    head, section("Energy", chartBox, powerBox), section("Meter values", readingsBox));
  let tx = null;

  async function loadHead() {
    tx = await get(`/transactions/${id}`, undefined, ctx.signal);
    replace(head,
      h("div", { class: "title" }, h("h1", {}, `Transaction ${tx.transaction_id}`),
        h("span", { id: "transaction-status" }, badge(tx.status))),
      h("dl", { class: "facts" }, [
        ["station", h("a", { href: `#/station/${encodeURIComponent(tx.charge_point_id)}` }, tx.charge_point_id)],
        ["connector", tx.connector_id], ["id tag", `${tx.id_tag} (${tx.authorization_status})`],
        ["started", when(tx.start)], ["meter start", `${tx.meter_start} Wh`],
        ["meter last", tx.meter_last !== null && tx.meter_last !== undefined ? `${tx.meter_last} Wh at ${when(tx.meter_last_at)}` : ""],
        ["stopped", when(tx.stop)], ["meter stop", tx.meter_stop !== null && tx.meter_stop !== undefined ? `${tx.meter_stop} Wh` : ""],
        ["energy", tx.energy_wh !== null && tx.energy_wh !== undefined ? `${tx.energy_wh} Wh` : ""],
        ["reason", tx.reason || tx.closed_by || ""],
      ].filter(([, value]) => value !== "" && value !== null && value !== undefined)
        .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])));
  }

  async function loadReadings() {
    const readings = await all(`/transactions/${id}/meter-values`, { limit: 1000 }, (m) => m.id, MAX_READINGS,
      ctx.signal);
    // the register starts at the transaction's meterStart, at its start time (the StartTransaction's own reading)
    const started = Date.parse(tx.start);
    const energy = Number.isFinite(started) && Number.isFinite(Number(tx.meter_start))
      ? [{ t: started, v: Number(tx.meter_start), label: "meter start" }] : [];
    const watts = [];
    for (const m of readings) {
      const t = Date.parse(m.timestamp);
      const wh = energyWh(m.sampled_value);
      if (wh !== null) energy.push({ t, v: wh });
      const w = power(m.sampled_value);
      if (w !== null) watts.push({ t, v: w });
    }
    replace(chartBox, lineChart({ series: [{ name: "energy register (Wh)", className: "energy", points: energy }],
      unit: "Wh", label: "energy register" }));
    replace(powerBox, watts.length ? lineChart({ series: [{ name: "active power (W)", className: "power", points: watts }],
      unit: "W", label: "active power" }) : "");
    replace(readingsBox, table([
      ["at", (m) => when(m.timestamp)], ["source", (m) => m.source],
      ["values", (m) => (m.sampled_value || []).map((s) => `${s.value} ${s.unit || "Wh"} ${s.measurand || ""}`).join("; ")],
    ], [...readings].reverse().slice(0, 100), { empty: "no meter values yet" }));
  }

  async function load() {
    try {
      await loadHead();
      await loadReadings();
    } catch (error) {
      if (error.name !== "AbortError" && ctx.active) replace(head, errorBox(error));
    }
  }
  await load();
  if (!tx) return;
  let timer = null;
  const later = () => { clearTimeout(timer); timer = setTimeout(load, 100); };
  const stream = new EventStream({
    types: "meter.values,transaction.*", chargePointId: tx.charge_point_id,
    onEvent: (type, event) => { if (event.transaction_id === id) later(); },
    onState: (state) => { ctx.live(state); if (state === "live") later(); },
  }).start();
  ctx.onLeave(() => stream.stop());
}
