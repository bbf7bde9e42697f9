// #/files: diagnostics requests, uploaded files, logs, hosted firmware and firmware updates with their progress;
// #/security: security events. Both follow the event stream and read themselves again when something changes.
import { EventStream, get } from "./api.js";
import { badge, errorBox, h, replace, section, table, when } from "./dom.js";

const UPDATE_STEPS = ["Requested", "Downloading", "Downloaded", "Installing", "Installed"];
const SIGNED_STEPS = ["Requested", "Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"];

// a firmware update's progress: the steps it went through (from its history), failed ones marked
export function firmwareProgress(update) {
  const steps = update.signed ? SIGNED_STEPS : UPDATE_STEPS;
  const reached = new Set([(update.history || []).map((entry) => entry.status), update.status].flat());
  const failed = /Failed|Invalid|Rejected|Superseded/.test(update.status);
  const index = steps.indexOf(update.status);
  const done = index >= 0 ? index + 1 : steps.filter((step) => reached.has(step)).length;
  const percent = Math.round((100 * done) / steps.length);
  const fill = h("div", { class: `fill${failed ? " failed" : ""}`, dataset: { percent } });
  fill.style.width = `${percent}%`;  // through the CSSOM: the page's policy allows no style attribute
  return h("div", { class: "progress", dataset: { status: update.status, steps: steps.length, done } },
    h("div", { class: "bar" }, fill),
    h("ol", { class: "steps" }, steps.map((step) => h("li", { class: reached.has(step) ? "reached" : "" }, step))),
    failed ? badge(update.status, "failed") : badge(update.status));
}

function debounce(fn, ms = 200) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

const cpLink = (id) => h("a", { href: `#/station/${encodeURIComponent(id)}` }, id);

function follow(ctx, types, load) {
  const later = debounce(load);
  const stream = new EventStream({ types, onEvent: later, onState: (state) => {
    ctx.live(state);
    if (state === "live") later();
  } }).start();
  ctx.onLeave(() => stream.stop());
}

export async function filesView(ctx, root) {
  const box = h("div", { id: "files" });
  replace(root, h("h1", {}, "Diagnostics & firmware"), box);
  async function load() {
    try {
      const [diagnostics, files, logs, firmware, updates] = await Promise.all([
        get("/diagnostics", { limit: 50 }, ctx.signal), get("/files", { limit: 50 }, ctx.signal),
        get("/logs", { limit: 50 }, ctx.signal), get("/firmware", undefined, ctx.signal),
        get("/firmware-updates", { limit: 50 }, ctx.signal)]);
      replace(box,
        section("Firmware updates", table([
          ["station", (u) => cpLink(u.charge_point_id)], ["requested", (u) => when(u.requested_at)],
          ["firmware", (u) => u.firmware || u.location], ["progress", firmwareProgress],
          ["error", (u) => u.error ? h("span", { class: "problem" }, u.error) : ""],
        ], updates, { rowAttrs: (u) => ({ dataset: { request: u.request_id } }) })),
        section("Diagnostics requests", table([
          ["station", (d) => cpLink(d.charge_point_id)], ["requested", (d) => when(d.requested_at)],
          ["status", (d) => badge(d.status)], ["file", (d) => d.file_name || ""], ["to", (d) => d.location],
          ["error", (d) => d.error ? h("span", { class: "problem" }, d.error) : ""],
        ], diagnostics)),
        section("Uploaded files", table([
          ["station", (f) => cpLink(f.charge_point_id)], ["uploaded", (f) => when(f.uploaded_at)],
          ["kind", (f) => f.kind], ["file", (f) => f.filename], ["bytes", (f) => f.size],
          ["download", (f) => f.download_url ? h("code", {}, f.download_url) : ""],
        ], files)),
        section("Logs (security extension)", table([
          ["station", (l) => cpLink(l.charge_point_id)], ["requested", (l) => when(l.requested_at)],
          ["type", (l) => l.log_type], ["status", (l) => badge(l.status)], ["file", (l) => l.file_name || ""],
        ], logs)),
        section("Hosted firmware images", table([
          ["name", (f) => f.name], ["bytes", (f) => f.size], ["uploaded", (f) => when(f.uploaded_at)],
          ["URL", (f) => h("code", {}, f.url)],
        ], firmware)));
    } catch (error) {
      if (error.name !== "AbortError" && ctx.active) replace(box, errorBox(error));
    }
  }
  follow(ctx, "diagnostics.*,firmware.*", load);
  await load();
}

export async function securityView(ctx, root) {
  const stationFilter = h("input", { type: "text", name: "charge_point_id", placeholder: "all stations" });
  const criticalOnly = h("input", { type: "checkbox", name: "critical" });
  const filters = h("form", { class: "filters" }, h("label", { class: "field" }, h("span", {}, "station"), stationFilter),
    h("label", { class: "inline" }, criticalOnly, " critical only"), h("button", { type: "submit" }, "Show"));
  const box = h("div", { id: "security-events" });
  replace(root, h("h1", {}, "Security events"), filters, box);
  async function load() {
    try {
      const events = await get("/security-events", { limit: 200, charge_point_id: stationFilter.value.trim() || undefined,
        critical: criticalOnly.checked || undefined }, ctx.signal);
      replace(box, table([
        ["at", (e) => when(e.timestamp)], ["station", (e) => cpLink(e.charge_point_id)], ["type", (e) => e.type],
        ["critical", (e) => e.critical ? badge("critical") : ""], ["details", (e) => e.tech_info || ""],
        ["received", (e) => when(e.received_at)],
      ], events, { empty: "no security event", rowAttrs: (e) => ({ class: e.critical ? "problem" : "" }) }));
    } catch (error) {
      if (error.name !== "AbortError" && ctx.active) replace(box, errorBox(error));
    }
  }
  filters.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  follow(ctx, "security.*", load);
  await load();
}
