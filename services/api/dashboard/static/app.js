// The dashboard's shell: login with an API key, the routes (#/stations, #/station/<id>, #/transactions,
// #/transaction/<id>, #/files, #/security), the live-status indicator. Each view gets a context whose cleanups run
// when the operator leaves it (event streams closed, pending requests aborted).
import { ApiError, get, session } from "./api.js";
import { errorBox, h, params, replace } from "./dom.js";
import { stationsView } from "./stations.js";
import { stationView } from "./station.js";
import { transactionsView, transactionView } from "./transactions.js";
import { filesView, securityView } from "./files.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const logoutButton = document.getElementById("logout");
const liveBadge = document.getElementById("live");

let current = null;      // the view's context
let refusal = null;      // why the last key was refused, shown on the login form
let me = null;           // GET /me of the key in use

function live(state) {
  liveBadge.hidden = state === "closed";
  liveBadge.textContent = state === "live" ? "live" : "reconnecting...";
  liveBadge.className = `live ${state}`;
}

function context() {
  const cleanups = [];
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  return {
    signal: controller.signal,
    live,
    onLeave(fn) { cleanups.push(fn); },
    leave() { for (const fn of cleanups.splice(0)) { try { fn(); } catch (error) { console.error(error); } } },
    get active() { return current === this; },
  };
}

function logout(reason) {
  session.clear();
  me = null;
  refusal = reason || null;
  if (location.hash !== "#/login") location.hash = "#/login";
  else route();
}

session.onRefused = (error) => logout(`API key refused: ${error.message}. Log in with a valid key.`);
logoutButton.addEventListener("click", () => logout(null));

function loginView() {
  nav.hidden = true;
  logoutButton.hidden = true;
  who.textContent = "";
  live("closed");
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off",
    spellcheck: "false", required: true, placeholder: "csms_...", "aria-label": "API key" });
  const message = h("p", { id: "login-error", class: "error", role: "alert", hidden: !refusal }, refusal || "");
  const button = h("button", { type: "submit", id: "login-button" }, "Log in");
  const form = h("form", { class: "login panel", id: "login-form" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "With an API key of this system (", h("code", {}, "csms api-keys create --scope command"),
      "). It stays in this browser tab only and is sent to the HTTP API with each request."),
    h("label", { class: "field" }, h("span", {}, "API key"), input),
    button, message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    input.value = "";  // the key is never left in the page
    if (!key) return;
    button.disabled = true;
    session.set(key);
    try {
      me = await get("/me");
      refusal = null;
      location.hash = "#/stations";
    } catch (error) {
      session.clear();
      refusal = error instanceof ApiError && error.status === 401
        ? `API key refused: ${error.message}.` : `Cannot log in: ${error.message}`;
      message.textContent = refusal;
      message.hidden = false;
      button.disabled = false;
      input.focus();
    }
  });
  replace(main, form);
  input.focus();
}

const ROUTES = [
  [/^#\/stations$/, "stations", () => stationsView],
  [/^#\/station\/(.+)$/, "stations", (m) => (ctx, root) => stationView(ctx, root, decodeURIComponent(m[1]))],
  [/^#\/transactions$/, "transactions", () => transactionsView],
  [/^#\/transaction\/(-?\d+)$/, "transactions", (m) => (ctx, root) => transactionView(ctx, root, Number(m[1]))],
  [/^#\/files$/, "files", () => filesView],
  [/^#\/security$/, "security", () => securityView],
];

async function route() {
  if (current) current.leave();
  current = null;
  const hash = location.hash.split("?")[0] || "#/stations";
  if (!session.key || hash === "#/login") {
    if (session.key && hash === "#/login") { location.hash = "#/stations"; return; }
    loginView();
    return;
  }
  const ctx = context();
  current = ctx;
  if (!me) {
    try { me = await get("/me"); } catch (error) {
      if (ctx.active) replace(main, errorBox(error));
      return;
    }
    if (!ctx.active) return;
  }
  who.textContent = `${me.name} (${me.scopes.join(", ")})`;
  nav.hidden = false;
  logoutButton.hidden = false;
  const found = ROUTES.find(([pattern]) => pattern.test(hash));
  if (!found) { location.hash = "#/stations"; return; }
  const [pattern, sectionName, make] = found;
  for (const link of nav.querySelectorAll("a")) link.classList.toggle("current", link.dataset.section === sectionName);
  const root = h("div", { class: "view", id: `view-${sectionName}` });
  replace(main, root);
  try {
    await make(hash.match(pattern))(ctx, root, params());
  } catch (error) {
    if (error.name !== "AbortError" && ctx.active) root.append(errorBox(error));
  }
}

window.addEventListener("hashchange", route);
route();
