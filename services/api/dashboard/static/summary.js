// One line of text per bus event, for the recent activity of a station.

const connectorText = (e) => `connector ${e.connector_id}`;

function firstSample(meterValue) {
  const sample = meterValue && meterValue[0] && (meterValue[0].sampledValue || meterValue[0].sampled_value);
  if (!sample || !sample.length) return "";
  const s = sample[0];
  return `${s.value} ${s.unit || "Wh"}${s.measurand ? ` ${s.measurand}` : ""}`;
}

const SUMMARIES = {
  "station.connected": (e) => `connected${e.remote_address ? ` from ${e.remote_address}` : ""}` +
    `${e.security_profile !== null && e.security_profile !== undefined ? ` (security profile ${e.security_profile})` : ""}`,
  "station.disconnected": (e) => `disconnected${e.code ? ` (${e.code}${e.reason ? ` ${e.reason}` : ""})` : ""}`,
  "station.flapping": (e) => `two connections keep taking this id: newcomers refused for ${e.backoff} s`,
  "station.protocol_error": (e) => (e.direction === "csms_to_cp"
    ? `its answer to ${e.action} (${e.message_id}): ${e.error_code}`
    : `CALLERROR ${e.error_code} sent for ${e.action || "a frame"} (${e.message_id ?? "-1"})`) +
    `${e.description ? `: ${e.description}` : ""}` +
    `${e.suppressed ? ` (and ${e.suppressed} more not shown: GATEWAY_PROTOCOL_ERROR_EVENTS)` : ""}`,
  "station.booted": (e) => `BootNotification ${e.vendor} ${e.model}: ${e.status}`,
  "station.configuration_changed": (e) => `configuration ${e.key} = ${e.value} (${e.status})`,
  "connector.status_changed": (e) => `${connectorText(e)}: ${e.previous_status || "?"} -> ${e.status}` +
    `${e.error_code && e.error_code !== "NoError" ? ` (${e.error_code}${e.info ? `: ${e.info}` : ""})` : ""}`,
  "transaction.started": (e) => `transaction ${e.transaction_id} started on ${connectorText(e)} by ${e.id_tag}` +
    ` (${e.authorization_status})`,
  "transaction.stopped": (e) => `transaction ${e.transaction_id} stopped: ${e.energy_wh ?? "?"} Wh` +
    ` (${e.reason || e.closed_by || "no reason"})`,
  "meter.values": (e) => `meter values on ${connectorText(e)}` +
    `${e.transaction_id !== null && e.transaction_id !== undefined ? `, transaction ${e.transaction_id}` : ""}` +
    `${firstSample(e.meter_value) ? `: ${firstSample(e.meter_value)}` : ""}`,
  "firmware.status_changed": (e) => `firmware: ${e.status}`,
  "firmware.update_changed": (e) => `firmware update ${e.request_id}: ${e.previous_status || "?"} -> ${e.status}`,
  "diagnostics.status_changed": (e) => `diagnostics: ${e.status}${e.source ? ` (${e.source})` : ""}`,
  "diagnostics.uploaded": (e) => `uploaded ${e.filename} (${e.size} bytes)`,
  "diagnostics.log_status_changed": (e) => `${e.log_type}: ${e.status}`,
  "charging.profiles_changed": (e) => `charging profiles ${e.change} on ${connectorText(e)}: ${(e.profile_ids || []).join(", ")}`,
  "charging.schedule_mismatch": (e) => `composite schedule of ${connectorText(e)} differs from the prediction` +
    ` (${(e.differences || []).length} differences)`,
  "reservation.changed": (e) => `reservation ${e.reservation_id} ${e.change}`,
  "security.event_received": (e) => `security event ${e.type}${e.critical ? " (critical)" : ""}` +
    `${e.tech_info ? `: ${e.tech_info}` : ""}`,
  "security.certificate_changed": (e) => `certificate ${e.serial_number}: ${e.status}`,
  "datatransfer.received": (e) => `DataTransfer ${e.vendor_id}${e.message_id ? `/${e.message_id}` : ""}: ${e.status}`,
  "command.completed": (e) => `${e.action}: ${e.status}` +
    `${e.result && e.result.payload && e.result.payload.status ? ` ${e.result.payload.status}` : ""}`,
};

export function summary(type, event) {
  const make = SUMMARIES[type];
  if (make) {
    try { return make(event); } catch { /* fall through */ }
  }
  const scalars = Object.entries(event || {})
    .filter(([name, value]) => !["event_id", "occurred_at", "charge_point_id"].includes(name) &&
      (typeof value !== "object" || value === null))
    .slice(0, 4).map(([name, value]) => `${name}=${value}`);
  return scalars.join(", ");
}
