// #/station/<id>: one station -- connectors, commands with the charge point's answer, transactions, charging
// profiles and the composite schedule (predicted next to reported), configuration, recent activity, diagnostics,
// firmware and security events. Every part re-reads itself when an event about the station says it changed.
import { EventStream, command, cp, get } from "./api.js";
import { stepChart } from "./charts.js";
import { badge, errorBox, field, h, json, online, replace, section, table, when } from "./dom.js";
import { firmwareProgress } from "./files.js";
import { summary } from "./summary.js";

const TRIGGERS = ["BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat",
  "MeterValues", "StatusNotification"];

function debounce(fn, ms = 150) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function guarded(ctx, box, load) {
  return async () => {
    try {
      await load();
    } catch (error) {
      if (error.name !== "AbortError" && ctx.active) replace(box, errorBox(error));
    }
  };
}

export async function stationView(ctx, root, id) {
  const base = cp(id);
  let station = null;
  const head = h("div", { id: "station-head", class: "panel" });
  const connectorsBox = h("div", { id: "connectors" });
  const transactionsBox = h("div", { id: "station-transactions" });
  const profilesBox = h("div", { id: "profiles" });
  const scheduleBox = h("div", { id: "schedule" });
  const configBox = h("div", { id: "configuration" });
  const activityBox = h("ol", { id: "activity", class: "activity" });
  const filesBox = h("div", { id: "station-files" });
  const securityBox = h("div", { id: "station-security" });
  const result = h("div", { id: "command-result", class: "result", "aria-live": "polite" });

  // ---- commands ----------------------------------------------------------------------------------------
  async function send(action, payload, button) {
    button.disabled = true;
    replace(result, h("p", { class: "muted" }, `${action}: waiting for the charge point...`));
    try {
      const answer = await command(id, action, payload);
      const status = answer.payload && answer.payload.status;
      replace(result,
        h("p", { class: `answer ${answer.status}`, dataset: { action, status: answer.status, answer: status || "" } },
          h("strong", {}, action), ": ",
          answer.status === "answered"
            ? [badge(status || "answered", status ? status.toLowerCase() : "answered")]
            : [badge(answer.status, "refused"), " ", answer.error_description || answer.error_code || ""]),
        (answer.warnings || []).map((warning) => h("p", { class: "warning" }, warning)),
        answer.payload ? json(answer.payload) : "");
      return answer;
    } catch (error) {
      replace(result, h("p", { class: "answer error", dataset: { action, status: "error" } },
        h("strong", {}, action), `: ${error.message}`));
      return null;
    } finally {
      button.disabled = false;
    }
  }

  function form(name, title, inputs, build) {
    const button = h("button", { type: "submit" }, title);
    const node = h("form", { class: "command", id: `cmd-${name}` }, inputs, button);
    node.addEventListener("submit", (event) => {
      event.preventDefault();
      const values = Object.fromEntries(new FormData(node).entries());
      send(...build(values), button).then((answer) => after(name, answer));
    });
    return node;
  }
  const number = (name, value, min = 0) => h("input", { type: "number", name, value, min, required: true });
  const text = (name, value, attrs = {}) => h("input", { type: "text", name, value, ...attrs });
  const select = (name, options) => h("select", { name }, options.map((o) => h("option", { value: o }, o)));

  function after(name, answer) {
    if (!answer) return;
    if (name === "config") loadConfig();
    if (name === "composite" && answer.status === "answered") { drawReport(answer.server, answer.payload); loadLastReport(); }
  }

  const commands = section("Commands",
    form("reset", "Reset", [field("type", select("type", ["Soft", "Hard"]))], (v) => ["Reset", { type: v.type }]),
    form("unlock", "Unlock", [field("connector", number("connectorId", 1, 1))],
      (v) => ["UnlockConnector", { connectorId: Number(v.connectorId) }]),
    form("remote-start", "Remote start", [field("connector", number("connectorId", 1, 1)),
      field("id tag", text("idTag", "", { required: true, maxlength: 20 }))],
    (v) => ["RemoteStartTransaction", { connectorId: Number(v.connectorId), idTag: v.idTag }]),
    form("remote-stop", "Remote stop", [field("transaction", number("transactionId", "", -2147483648))],
      (v) => ["RemoteStopTransaction", { transactionId: Number(v.transactionId) }]),
    form("trigger", "Trigger", [field("message", select("requestedMessage", TRIGGERS)),
      field("connector (optional)", h("input", { type: "number", name: "connectorId", min: 1 }))],
    (v) => ["TriggerMessage", { requestedMessage: v.requestedMessage,
      ...(v.connectorId ? { connectorId: Number(v.connectorId) } : {}) }]),
    form("diagnostics", "Get diagnostics", [field("upload to", text("location", "csms:http", { required: true,
      title: "csms:http or csms:ftp: this system's file intake; or a URL of your own" }))],
    (v) => ["GetDiagnostics", { location: v.location }]),
    result);

  // ---- the parts ---------------------------------------------------------------------------------------------
  const loadHead = guarded(ctx, head, async () => {
    station = await get(base, undefined, ctx.signal);
    replace(head,
      h("div", { class: "title" }, h("h1", {}, station.charge_point_id),
        h("span", { id: "station-online" }, online(station.connected)),
        station.boot_status ? badge(station.boot_status) : badge("not booted", "muted")),
      h("dl", { class: "facts" },
        [["vendor", station.vendor], ["model", station.model], ["serial", station.charge_point_serial_number ||
          station.serial_number], ["firmware", station.firmware_version], ["firmware status", station.firmware_status],
        ["booted", when(station.booted_at)], ["last seen", when(station.last_seen)],
        ["address", station.remote_address], ["security profile", station.security_profile ?? station.connected_profile]]
          .filter(([, value]) => value !== null && value !== undefined && value !== "")
          .map(([term, value]) => [h("dt", {}, term), h("dd", {}, String(value))])));
    const rows = Object.entries(station.connectors || {}).sort(([a], [b]) => Number(a) - Number(b))
      .map(([connector, c]) => ({ connector, ...c }));
    replace(connectorsBox, table([
      ["connector", (c) => c.connector === "0" ? "0 (station)" : c.connector],
      ["status", (c) => h("span", { class: `connector ${c.status.toLowerCase()}`, dataset: { connector: c.connector,
        status: c.status } }, c.status)],
      ["error", (c) => c.error_code === "NoError" ? "" : h("span", { class: "problem" }, c.error_code)],
      ["info", (c) => [c.info, c.vendor_error_code].filter(Boolean).join(" ")],
      ["since", (c) => when(c.ordered_at || c.timestamp || c.received_at)],
    ], rows, { empty: "no connector has reported its status" }));
    renderConfig();
  });

  function renderConfig() {
    const rows = Object.entries((station && station.configuration) || {}).sort(([a], [b]) => a.localeCompare(b))
      .map(([key, value]) => ({ key, ...value }));
    const readButton = h("button", { type: "submit" }, "Read from the charge point");
    const reader = h("form", { class: "command", id: "cmd-config" }, readButton);
    reader.addEventListener("submit", (event) => {
      event.preventDefault();
      send("GetConfiguration", {}, readButton).then((answer) => after("config", answer));
    });
    replace(configBox, reader, table([
      ["key", (c) => c.key], ["value", (c) => c.value ?? ""], ["read-only", (c) => c.readonly ? "yes" : ""],
      ["source", (c) => c.source || ""], ["updated", (c) => when(c.updated_at)],
    ], rows, { empty: "not read yet" }));
  }
  const loadConfig = loadHead;

  const loadTransactions = guarded(ctx, transactionsBox, async () => {
    const active = await get("/transactions", { charge_point_id: id, active_only: true, limit: 100 }, ctx.signal);
    replace(transactionsBox, table([
      ["transaction", (t) => h("a", { href: `#/transaction/${t.transaction_id}`, class: "tx-link" }, String(t.transaction_id))],
      ["connector", (t) => t.connector_id], ["id tag", (t) => t.id_tag], ["started", (t) => when(t.start)],
      ["meter", (t) => `${t.meter_last ?? t.meter_start} Wh`],
    ], active, { empty: "no transaction in progress", rowAttrs: (t) => ({ dataset: { transaction: t.transaction_id } }) }),
    h("p", {}, h("a", { href: `#/transactions?charge_point_id=${encodeURIComponent(id)}` }, "all transactions of this station")));
    const stop = root.querySelector("#cmd-remote-stop input[name=transactionId]");
    if (stop && active.length && !stop.value) stop.value = active[active.length - 1].transaction_id;
  });

  const loadProfiles = guarded(ctx, profilesBox, async () => {
    const profiles = await get(`${base}/charging-profiles`, undefined, ctx.signal);
    replace(profilesBox, table([
      ["connector", (p) => p.connector_id], ["id", (p) => p.profile.chargingProfileId],
      ["purpose", (p) => p.profile.chargingProfilePurpose], ["stack level", (p) => p.profile.stackLevel],
      ["kind", (p) => p.profile.chargingProfileKind],
      ["schedule", (p) => {
        const s = p.profile.chargingSchedule || {};
        return (s.chargingSchedulePeriod || []).map((period) => `${period.startPeriod} s: ${period.limit} ${s.chargingRateUnit}`).join(", ");
      }],
    ], profiles, { empty: "no charging profile installed" }));
  });

  // ---- composite schedule: predicted (GET composite-schedule) next to reported (GetCompositeSchedule) -------
  const scheduleForm = h("form", { class: "command", id: "schedule-form" },
    field("connector", number("connectorId", 1, 0)), field("duration (s)", number("duration", 7200, 1)),
    field("unit", select("unit", ["A", "W"])),
    h("button", { type: "submit", name: "predict" }, "Predict"),
    h("button", { type: "button", id: "ask-composite" }, "Ask the charge point"));
  const chartBox = h("div", { id: "schedule-chart" });
  const lastReport = h("p", { id: "last-report", class: "muted" });
  replace(scheduleBox, scheduleForm, lastReport, chartBox);

  function schedule(conf) {
    const s = conf && conf.chargingSchedule;
    if (!s) return null;
    const start = Date.parse(conf.scheduleStart || s.startSchedule);
    return { start, duration: s.duration, unit: s.chargingRateUnit, periods: (s.chargingSchedulePeriod || [])
      .map((p) => ({ startPeriod: Number(p.startPeriod), limit: Number(p.limit) })) };
  }

  function draw(predicted, reported, note) {
    const series = [];
    const p = schedule(predicted), r = schedule(reported);
    if (p) series.push({ name: "predicted by the central system", className: "predicted", ...p });
    if (r) series.push({ name: "reported by the charge point", className: "reported", ...r });
    const unit = (p && p.unit) || (r && r.unit) || scheduleForm.elements.unit.value;
    const chart = stepChart({ series, unit, label: "composite schedule" });
    const svg = chart.querySelector("svg");
    if (svg && p) svg.dataset.scheduleStart = predicted.scheduleStart;
    if (svg && r) svg.dataset.reportedStart = reported.scheduleStart;
    replace(chartBox, note ? h("p", { class: "muted" }, note) : "", chart,
      predicted && predicted.status !== "Accepted"
        ? h("p", { class: "muted" }, "no limit predicted: the profiles stored for the station set none then") : "",
      reported && reported.status && reported.status !== "Accepted"
        ? h("p", { class: "problem" }, `the charge point answered ${reported.status}`) : "");
  }

  let showingReport = false;  // a charge point's answer stays on screen until the operator predicts again
  function drawReport(server, reported) {
    showingReport = true;
    const predicted = server ? { ...server } : null;
    draw(predicted, reported, `asked the charge point at ${when(new Date())}`);
  }

  async function predict() {
    const values = Object.fromEntries(new FormData(scheduleForm).entries());
    const predicted = await get(`${base}/composite-schedule`, { connector_id: values.connectorId,
      duration: values.duration, charging_rate_unit: values.unit }, ctx.signal);
    if (showingReport) return;  // the operator chose a charge point's answer meanwhile
    draw(predicted, null, `predicted at ${when(new Date())} from the profiles stored for the station`);
  }
  // the last GetCompositeSchedule answer kept next to its prediction (GET composite-reports)
  const loadLastReport = guarded(ctx, lastReport, async () => {
    const [report] = await get(`${base}/composite-reports`, { limit: 1 }, ctx.signal);
    if (!report) { replace(lastReport, "The charge point has not been asked for its composite schedule yet."); return; }
    const show = h("button", { type: "button", id: "show-last-report" }, "show it");
    show.addEventListener("click", () => {
      showingReport = true;
      draw(report.predicted, report.reported, `connector ${report.connector_id}, asked at ${when(report.requested_at)}`);
    });
    replace(lastReport, `Last asked ${when(report.requested_at)} (connector ${report.connector_id}): `,
      report.mismatch ? h("span", { class: "problem" }, `differs from the prediction (${report.differences.length})`)
        : "matches the prediction", " ", show);
  });
  const loadSchedule = guarded(ctx, chartBox, predict);
  scheduleForm.addEventListener("submit", (event) => { event.preventDefault(); showingReport = false; loadSchedule(); });
  scheduleForm.querySelector("#ask-composite").addEventListener("click", (event) => {
    const values = Object.fromEntries(new FormData(scheduleForm).entries());
    send("GetCompositeSchedule", { connectorId: Number(values.connectorId), duration: Number(values.duration),
      chargingRateUnit: values.unit }, event.target).then((answer) => after("composite", answer));
  });

  // ---- recent activity ---------------------------------------------------------------------------------------
  const problemsOnly = h("input", { type: "checkbox", id: "problems-only" });
  function activityItem(entry) {
    return h("li", { class: entry.problem ? "problem" : "", dataset: { type: entry.type } },
      h("time", {}, when(entry.occurred_at)), " ", h("span", { class: "type" }, entry.type), " ",
      summary(entry.type, entry.event));
  }
  const loadActivity = guarded(ctx, activityBox, async () => {
    const entries = await get(`${base}/activity`, { limit: 50, problems_only: problemsOnly.checked || undefined },
      ctx.signal);
    replace(activityBox, entries.length ? entries.map(activityItem)
      : h("li", { class: "muted" }, "nothing since the API process started"));
  });
  problemsOnly.addEventListener("change", loadActivity);

  // ---- diagnostics, firmware, security -----------------------------------------------------------------------
  const loadFiles = guarded(ctx, filesBox, async () => {
    const [diagnostics, updates, logs] = await Promise.all([
      get("/diagnostics", { charge_point_id: id, limit: 10 }, ctx.signal),
      get("/firmware-updates", { charge_point_id: id, limit: 10 }, ctx.signal),
      get("/logs", { charge_point_id: id, limit: 10 }, ctx.signal)]);
    replace(filesBox,
      h("h3", {}, "Diagnostics requests"),
      table([["requested", (d) => when(d.requested_at)], ["status", (d) => badge(d.status)],
        ["file", (d) => d.file_name || ""], ["to", (d) => d.location],
        ["", (d) => d.error ? h("span", { class: "problem" }, d.error) : ""]], diagnostics,
      { empty: "none", rowAttrs: (d) => ({ dataset: { request: d.request_id } }) }),
      h("h3", {}, "Logs"),
      table([["requested", (l) => when(l.requested_at)], ["type", (l) => l.log_type], ["status", (l) => badge(l.status)],
        ["file", (l) => l.file_name || ""]], logs),
      h("h3", {}, "Firmware updates"),
      table([["requested", (f) => when(f.requested_at)], ["firmware", (f) => f.firmware || f.location],
        ["progress", (f) => firmwareProgress(f)]], updates));
  });

  const loadSecurity = guarded(ctx, securityBox, async () => {
    const events = await get("/security-events", { charge_point_id: id, limit: 20 }, ctx.signal);
    replace(securityBox, table([["at", (e) => when(e.timestamp)], ["type", (e) => e.type],
      ["critical", (e) => e.critical ? badge("critical") : ""], ["details", (e) => e.tech_info || ""]], events,
    { rowAttrs: (e) => ({ class: e.critical ? "problem" : "" }) }));
  });

  replace(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/stations" }, "Stations"), " / ", id),
    head,
    h("div", { class: "columns" },
      h("div", {}, section("Connectors", connectorsBox), commands, section("Transactions in progress", transactionsBox)),
      h("div", {}, section("Recent messages and errors", h("label", { class: "inline" }, problemsOnly, " problems only"),
        activityBox))),
    section("Charging profiles", profilesBox, h("h3", {}, "Composite schedule"), scheduleBox),
    section("Configuration", configBox),
    section("Diagnostics, logs and firmware", filesBox),
    section("Security events", securityBox));

  // ---- live ------------------------------------------------------------------------------------------------------
  const refresh = {
    head: debounce(loadHead), transactions: debounce(loadTransactions), profiles: debounce(loadProfiles),
    schedule: debounce(() => { if (!showingReport) loadSchedule(); }, 300), files: debounce(loadFiles), security: debounce(loadSecurity),
    activity: debounce(loadActivity),
  };
  function onEvent(type) {
    refresh.activity();
    if ((type.startsWith("station.") && type !== "station.protocol_error") || type === "connector.status_changed" ||
        type === "firmware.status_changed") {
      refresh.head();
    }
    if (type.startsWith("transaction.") || type === "meter.values") refresh.transactions();
    if (type.startsWith("transaction.") || type === "charging.profiles_changed") refresh.schedule();
    if (type === "charging.profiles_changed") refresh.profiles();
    if (type.startsWith("diagnostics.") || type.startsWith("firmware.")) refresh.files();
    if (type.startsWith("security.")) refresh.security();
  }
  let loaded = false;
  const stream = new EventStream({
    chargePointId: id, onEvent,
    onState: (state) => {
      ctx.live(state);
      if (state === "live" && loaded) Object.values(refresh).forEach((fn) => fn());
    },
  }).start();
  ctx.onLeave(() => stream.stop());
  await Promise.all([loadHead(), loadTransactions(), loadProfiles(), loadSchedule(), loadLastReport(), loadActivity(),
    loadFiles(), loadSecurity()]);
  loaded = true;
}
