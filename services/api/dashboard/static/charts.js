// Hand-made SVG charts (no library): a step chart for charging schedules and a line chart for meter values.
// Every drawn step and point carries its numbers as data attributes (data-limit, data-from ... / data-t, data-v)
// and the SVG its scale (data-y-max, data-plot-*), so what is drawn can be checked against the API's numbers.

const NS = "http://www.w3.org/2000/svg";
const W = 760, H = 290, M = { left: 64, right: 36, top: 26, bottom: 40 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// the smallest of 1, 2, 2.5, 5, 10 x 10^n at or above value
export function niceCeil(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * exp >= value - 1e-9 * exp) return step * exp;
  return 10 * exp;
}

const pad = (n) => String(n).padStart(2, "0");
function clock(ms, withSeconds) {
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${withSeconds ? `:${pad(d.getUTCSeconds())}` : ""}`;
}

function frame(svg, { xMin, xMax, yMax, unit }) {
  const plot = { left: M.left, right: W - M.right, top: M.top, bottom: H - M.bottom };
  const x = (t) => plot.left + ((t - xMin) / (xMax - xMin || 1)) * (plot.right - plot.left);
  const y = (v) => plot.bottom - (v / (yMax || 1)) * (plot.bottom - plot.top);
  Object.assign(svg.dataset, {
    yMax, xMin, xMax, plotLeft: plot.left, plotRight: plot.right, plotTop: plot.top, plotBottom: plot.bottom,
  });
  const axes = el("g", { class: "axes" });
  for (let i = 0; i <= 4; i += 1) {
    const value = (yMax * i) / 4;
    axes.append(el("line", { x1: plot.left, x2: plot.right, y1: y(value), y2: y(value), class: "grid" }));
    axes.append(el("text", { x: plot.left - 6, y: y(value) + 4, "text-anchor": "end" },
      `${+value.toFixed(2)}`));
  }
  const span = xMax - xMin;
  for (let i = 0; i <= 5; i += 1) {
    const t = xMin + (span * i) / 5;
    axes.append(el("line", { x1: x(t), x2: x(t), y1: plot.bottom, y2: plot.bottom + 4, class: "tick" }));
    const anchor = i === 0 ? "start" : i === 5 ? "end" : "middle";
    axes.append(el("text", { x: x(t), y: plot.bottom + 18, "text-anchor": anchor }, clock(t, span < 600000)));
  }
  axes.append(el("text", { x: plot.left - 6, y: 12, "text-anchor": "end", class: "unit" }, unit));
  axes.append(el("text", { x: plot.right, y: H - 4, "text-anchor": "end", class: "unit" }, "UTC"));
  svg.append(axes);
  return { x, y, plot };
}

function svgRoot(label, kind) {
  return el("svg", { viewBox: `0 0 ${W} ${H}`, class: `chart ${kind}`, role: "img", "aria-label": label });
}

function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.className = `key ${s.className}`;
    item.textContent = s.name;
    box.append(item);
  }
  return box;
}

// series: [{name, className, start (ms), duration (s, optional), periods: [{startPeriod, limit}]}]
export function stepChart({ series, unit, label = "charging schedule" }) {
  const drawn = series.filter((s) => s.periods && s.periods.length);
  const wrapper = document.createElement("figure");
  wrapper.className = "chart-box";
  const svg = svgRoot(label, "steps");
  if (!drawn.length) {
    wrapper.append(Object.assign(document.createElement("p"), { className: "muted", textContent: "no schedule" }));
    return wrapper;
  }
  const steps = [];
  for (const s of drawn) {
    const periods = [...s.periods].sort((a, b) => a.startPeriod - b.startPeriod);
    const last = periods[periods.length - 1].startPeriod;
    const end = s.start + 1000 * (s.duration && s.duration > last ? s.duration : last + Math.max(3600, last / 4));
    periods.forEach((p, i) => {
      const from = s.start + 1000 * p.startPeriod;
      const to = i + 1 < periods.length ? s.start + 1000 * periods[i + 1].startPeriod : end;
      steps.push({ series: s, from, to: Math.max(from, to), limit: Number(p.limit), period: p });
    });
  }
  const xMin = Math.min(...steps.map((s) => s.from));
  const xMax = Math.max(...steps.map((s) => s.to));
  const yMax = niceCeil(Math.max(...steps.map((s) => s.limit)) * 1.1);
  const { x, y } = frame(svg, { xMin, xMax, yMax, unit });
  for (const s of drawn) {
    const mine = steps.filter((step) => step.series === s);
    const path = mine.map((step, i) => `${i ? "L" : "M"}${x(step.from)},${y(step.limit)}L${x(step.to)},${y(step.limit)}`);
    svg.append(el("path", { d: path.join(""), class: `trace ${s.className}` }));
    for (const step of mine) {
      const line = el("line", {
        x1: x(step.from), x2: x(step.to), y1: y(step.limit), y2: y(step.limit), class: `step ${s.className}`,
        "data-series": s.className, "data-from": new Date(step.from).toISOString(),
        "data-to": new Date(step.to).toISOString(), "data-start-period": step.period.startPeriod,
        "data-limit": step.limit,
      });
      line.append(el("title", {}, `${s.name}: ${step.limit} ${unit} from ${clock(step.from, true)}`));
      svg.append(line);
    }
  }
  wrapper.append(svg, legend(drawn));
  return wrapper;
}

// series: [{name, className, points: [{t (ms), v, label (optional, e.g. "meter start")}]}]
export function lineChart({ series, unit, label = "meter values" }) {
  const drawn = series.filter((s) => s.points.length);
  const wrapper = document.createElement("figure");
  wrapper.className = "chart-box";
  const svg = svgRoot(label, "lines");
  svg.dataset.points = String(drawn.reduce((n, s) => n + s.points.length, 0));
  if (!drawn.length) {
    wrapper.append(svg, Object.assign(document.createElement("p"), { className: "muted", textContent: "no readings yet" }));
    return wrapper;
  }
  const times = drawn.flatMap((s) => s.points.map((p) => p.t));
  let xMin = Math.min(...times), xMax = Math.max(...times);
  if (xMax - xMin < 60000) { xMin -= 30000; xMax += 30000; }
  const yMax = niceCeil(Math.max(...drawn.flatMap((s) => s.points.map((p) => p.v))) * 1.1);
  const { x, y } = frame(svg, { xMin, xMax, yMax, unit });
  for (const s of drawn) {
    const points = [...s.points].sort((a, b) => a.t - b.t);
    svg.append(el("polyline", { points: points.map((p) => `${x(p.t)},${y(p.v)}`).join(" "), class: `trace ${s.className}` }));
    for (const p of points) {
      const dot = el("circle", { cx: x(p.t), cy: y(p.v), r: 3.5, class: `point ${s.className}`,
        "data-t": new Date(p.t).toISOString(), "data-v": p.v, ...(p.label ? { "data-label": p.label } : {}) });
      dot.append(el("title", {}, `${p.label ? `${p.label}: ` : ""}${p.v} ${unit} at ${clock(p.t, true)}`));
      svg.append(dot);
    }
  }
  wrapper.append(svg, legend(drawn));
  return wrapper;
}
