// The dashboard's only way to the system: the public HTTP API (/api/v1), with the operator's key from
// sessionStorage in the Authorization header. Live status comes from GET /api/v1/events (server-sent events), read
// with fetch() so the key travels in a header (EventSource cannot send one, and a key in a URL ends up in logs).

const BASE = "/api/v1";
const KEY = "csms.apiKey";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
  onRefused: null,  // called when the API says the key is unknown or revoked (401)
};

function headers(extra = {}) {
  const key = session.key;
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

export function query(params) {
  const parts = [];
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    parts.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`);
  }
  return parts.length ? `?${parts.join("&")}` : "";
}

export const cp = (id) => `/charge-points/${encodeURIComponent(id)}`;

async function send(method, path, { params, body, signal } = {}) {
  let response;
  try {
    response = await fetch(BASE + path + query(params), {
      method, signal, cache: "no-store", credentials: "omit",
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the HTTP API cannot be reached", null);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const message = (data && typeof data === "object" && data.error) || `${response.status} ${response.statusText}`;
    const error = new ApiError(response.status, message, data);
    if (response.status === 401 && session.onRefused) session.onRefused(error);
    throw error;
  }
  return { data, response };
}

export async function request(method, path, options) {
  return (await send(method, path, options)).data;
}

// the `after` of the next page, from a Link header (<...?limit=50&after=CP-9>; rel="next"); null on the last page
export function nextCursor(link) {
  const match = /<([^>]*)>\s*;\s*rel="?next"?/.exec(link || "");
  if (!match) return null;
  const index = match[1].indexOf("?");
  return index < 0 ? null : new URLSearchParams(match[1].slice(index + 1)).get("after");
}

// One page of a paged list: {items, next} (next: the `after` of the following page, from the Link header).
export async function page(path, params, signal) {
  const { data, response } = await send("GET", path, { params, signal });
  return { items: data, next: nextCursor(response.headers.get("Link")) };
}

export const get = (path, params, signal) => request("GET", path, { params, signal });

// A command to a charge point, synchronous: the CommandResult (the charge point's answer, or why there is none).
export const command = (chargePointId, action, payload, timeout = 30) =>
  request("POST", `${cp(chargePointId)}/commands/${action}`, { params: { timeout }, body: payload });

// Every page of a paged list (Link rel="next" pages are followed with `after`), at most `max` items.
export async function all(path, params, cursor, max = 10000, signal) {
  const items = [];
  let after;
  for (;;) {
    const page = await get(path, { ...params, after }, signal);
    items.push(...page);
    if (page.length < (params.limit || 100) || items.length >= max) return items.slice(0, max);
    after = cursor(page[page.length - 1]);
  }
}

// Server-sent events: onEvent(type, data) for each event, onState("live" | "reconnecting" | "closed") as the
// stream comes and goes. A client that fell behind is told ("overflow") and reconnects; after every (re)connect
// onState("live") lets the view read the current state again, so nothing missed stays missed.
export class EventStream {
  constructor({ types, chargePointId, onEvent, onState }) {
    this.params = { types, charge_point_id: chargePointId };
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.controller = null;
    this.stopped = false;
  }

  start() { this.run(); return this; }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let wait = 500;
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        const response = await fetch(`${BASE}/events${query(this.params)}`, {
          headers: headers({ Accept: "text/event-stream" }), signal: this.controller.signal, cache: "no-store",
          credentials: "omit",
        });
        if (response.status === 401) {
          if (session.onRefused) session.onRefused(new ApiError(401, "unknown or revoked API key"));
          return;
        }
        if (response.ok) {
          await this.read(response.body.getReader(), () => { wait = 500; });
        } else if (response.status === 429) {
          wait = Math.max(wait, 5000);
        }
      } catch (error) {
        if (this.stopped) break;
      }
      if (this.stopped) break;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 10000);
    }
    this.onState("closed");
  }

  async read(reader, connected) {
    const decoder = new TextDecoder();
    let buffer = "", type = null, data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === ": subscribed") {
          connected();
          this.onState("live");
        } else if (line.startsWith("event: ")) {
          type = line.slice(7);
        } else if (line.startsWith("data: ")) {
          data.push(line.slice(6));
        } else if (line === "" && type !== null) {
          let parsed = null;
          try { parsed = JSON.parse(data.join("\n")); } catch { parsed = null; }
          const kind = type;
          type = null; data = [];
          if (kind === "overflow") return;  // the server closes the stream: reconnect and read the state again
          if (parsed && typeof parsed === "object") {
            try { this.onEvent(kind, parsed); } catch (error) { console.error("event handler failed", error); }
          }
        }
      }
    }
  }
}
