// streamml monitor's page: polls /api/snapshot and draws each chart as inline SVG (no library).
// Every drawn series is a <g data-series=NAME data-points=N data-max=M data-last=L>, every bar a
// <rect data-bar=LABEL data-value=V>, every swap marker a <g data-swap=VERSION data-at=T>, and each
// chart's <svg data-chart=ID data-state=ready|empty>: a test reads what is drawn from the DOM.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b6fd8", "#e0793a", "#2f9e6e", "#b0479b", "#c9a227", "#3aa6b9", "#d2495f", "#6b5bd3"];
const ROLE_NAMES = {raw_events: "raw events", features: "features", dead_letters: "dead letters",
                    predictions: "predictions", features_labelled: "labelled features"};
const HEIGHT = 176;
const MARGIN = {left: 50, right: 14, top: 14, bottom: 22};
let last = null;
let renders = 0;

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e6) return (value / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(abs >= 1e5 ? 0 : 1) + "k";
  if (digits !== undefined) return value.toFixed(digits);
  if (abs >= 100 || Number.isInteger(value)) return Math.round(value).toLocaleString("en-US");
  return value.toFixed(abs >= 10 ? 1 : 2);
}

function pct(value) { return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + "%"; }

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return "0 s";
  if (seconds < 120) return seconds.toFixed(0) + " s";
  if (seconds < 7200) return (seconds / 60).toFixed(0) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function niceTicks(min, max, count) {
  if (!(max > min)) max = min + 1;
  const raw = (max - min) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const err = raw / mag;
  const step = (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1) * mag;
  const lo = Math.floor(min / step + 1e-9) * step, hi = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let t = lo; t <= hi + step / 2; t += step) ticks.push(Math.round(t / step) * step);
  return {lo, hi, ticks};
}

function shortGroup(name, namespace) {
  const bare = namespace && name.startsWith(namespace) ? name.slice(namespace.length) : name;
  return bare.replace(/^streamml\./, "");
}

function empty(host, chart, message) {
  host.replaceChildren();
  const svg = el("svg", {"data-chart": chart, "data-state": "empty", viewBox: "0 0 10 1", height: 1});
  host.append(svg, html("div", {class: "empty"}, message));
}

// A time-series chart: series [{name, label, color, points: [[t, y|null]...], dash}], optional markers
// [{x, label, version}] (vertical lines) and a horizontal threshold.
function lineChart(host, chart, series, options) {
  const opts = options || {};
  const drawn = series.filter((s) => s.points.some((p) => p[1] !== null));
  if (!drawn.length) return empty(host, chart, opts.emptyText || "waiting for data…");
  const width = Math.max(host.clientWidth || 0, 320);
  // The time axis spans what is drawn: known values and markers (an unknown value only leaves a gap).
  const xs = drawn.flatMap((s) => s.points.filter((p) => p[1] !== null).map((p) => p[0]))
    .concat((opts.markers || []).map((m) => m.x));
  const ys = drawn.flatMap((s) => s.points.map((p) => p[1]).filter((y) => y !== null));
  let xMin = Math.min(...xs), xMax = Math.max(...xs, opts.xMax || -Infinity);
  if (xMax - xMin < 1) xMax = xMin + 1;
  const y = niceTicks(opts.yMin !== undefined ? opts.yMin : Math.min(0, ...ys),
                      opts.yMax !== undefined ? opts.yMax : Math.max(...ys, opts.threshold || 0, 1e-9), 4);
  const plotW = width - MARGIN.left - MARGIN.right, plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (t) => MARGIN.left + ((t - xMin) / (xMax - xMin)) * plotW;
  const sy = (v) => MARGIN.top + plotH - ((v - y.lo) / (y.hi - y.lo)) * plotH;
  const svg = el("svg", {"data-chart": chart, "data-state": "ready", viewBox: `0 0 ${width} ${HEIGHT}`,
                         height: HEIGHT, "data-series-count": drawn.length});
  for (const tick of y.ticks) {
    svg.append(el("line", {class: "gridline", x1: MARGIN.left, x2: width - MARGIN.right, y1: sy(tick), y2: sy(tick)}));
    svg.append(el("text", {x: MARGIN.left - 6, y: sy(tick) + 3.5, "text-anchor": "end"},
                  (opts.yFormat || fmt)(tick)));
  }
  const xTicks = 5;
  for (let i = 0; i <= xTicks; i++) {
    const t = xMin + ((xMax - xMin) * i) / xTicks;
    svg.append(el("text", {x: sx(t), y: HEIGHT - 6, "text-anchor": i === 0 ? "start" : i === xTicks ? "end" : "middle"},
                  clock(t)));
  }
  svg.append(el("line", {class: "axis", x1: MARGIN.left, x2: width - MARGIN.right, y1: sy(y.lo), y2: sy(y.lo)}));
  if (opts.threshold !== undefined && opts.threshold <= y.hi) {
    svg.append(el("line", {x1: MARGIN.left, x2: width - MARGIN.right, y1: sy(opts.threshold), y2: sy(opts.threshold),
                           stroke: "#e53e3e", "stroke-dasharray": "4 3", "data-threshold": opts.threshold}));
  }
  // Newest first, so that of markers too close to label each, the newest keeps its label.
  let labelled = Infinity;
  for (const marker of (opts.markers || []).slice().reverse()) {
    const x = sx(marker.x);
    const g = el("g", {class: "marker", "data-swap": marker.version, "data-at": marker.x});
    g.append(el("line", {x1: x, x2: x, y1: MARGIN.top, y2: sy(y.lo), stroke: "#8c96ad", "stroke-dasharray": "3 3"}));
    if (labelled - x >= 26) {
      g.append(el("text", {x: Math.min(x + 3, width - MARGIN.right - 18), y: MARGIN.top - 3}, marker.label));
      labelled = x;
    }
    svg.append(g);
  }
  for (const s of drawn) {
    const values = s.points.filter((p) => p[1] !== null);
    const g = el("g", {"data-series": s.name, "data-points": values.length,
                       "data-max": Math.max(...values.map((p) => p[1])), "data-last": values[values.length - 1][1]});
    let d = "", pen = false;
    for (const [t, v] of s.points) {
      if (v === null) { pen = false; continue; }  // unknown: a gap, never a 0
      d += `${pen ? "L" : "M"}${sx(t).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = true;
    }
    g.append(el("path", {d, fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-linejoin": "round",
                         "stroke-dasharray": s.dash}));
    if (values.length === 1) g.append(el("circle", {cx: sx(values[0][0]), cy: sy(values[0][1]), r: 3, fill: s.color}));
    svg.append(g);
  }
  host.replaceChildren(svg);
}

// Horizontal bars: items [{label, value, color, note}], largest first, optional threshold line.
function barChart(host, chart, items, options) {
  const opts = options || {};
  if (!items.length) return empty(host, chart, opts.emptyText || "nothing yet");
  const width = Math.max(host.clientWidth || 0, 320);
  const shown = items.slice(0, opts.max || 9);
  const row = 22, labelW = opts.labelWidth || 150, valueW = opts.valueWidth || 64;
  const height = Math.max(shown.length * row + 8, 60);
  const top = Math.max(opts.threshold || 0, ...shown.map((i) => i.value), 1e-9);
  const plotW = width - labelW - valueW;
  const svg = el("svg", {"data-chart": chart, "data-state": "ready", viewBox: `0 0 ${width} ${height}`, height,
                         "data-bars": items.length});
  shown.forEach((item, i) => {
    const yTop = 4 + i * row, w = Math.max((item.value / top) * plotW, item.value > 0 ? 2 : 0);
    svg.append(el("text", {class: "bar-label", x: labelW - 8, y: yTop + 14, "text-anchor": "end"}, item.label));
    svg.append(el("rect", {x: labelW, y: yTop + 3, width: w, height: row - 8, rx: 3, fill: item.color,
                           "data-bar": item.key || item.label, "data-value": item.value}));
    svg.append(el("text", {class: "bar-value", x: labelW + w + 6, y: yTop + 14},
                  (opts.format || fmt)(item.value) + (item.note ? `  ${item.note}` : "")));
  });
  if (opts.threshold !== undefined) {
    const x = labelW + (opts.threshold / top) * plotW;
    svg.append(el("line", {x1: x, x2: x, y1: 0, y2: height, stroke: "#e53e3e", "stroke-dasharray": "4 3",
                           "data-threshold": opts.threshold}));
  }
  host.replaceChildren(svg);
  if (items.length > shown.length) host.append(html("div", {class: "legend"}, `and ${items.length - shown.length} more`));
}

function legend(id, series, format) {
  const host = document.getElementById(id);
  host.replaceChildren(...series.map((s) => {
    const item = html("span", {"data-series": s.name});
    const swatch = html("i");
    swatch.style.background = s.color;
    const values = s.points.filter((p) => p[1] !== null);
    item.append(swatch, document.createTextNode(s.label || s.name),
                html("b", {}, values.length ? (format || fmt)(values[values.length - 1][1]) : "–"));
    return item;
  }));
}

function tiles(data) {
  const t = data.totals || {};
  const share = t.produced ? t.quarantined / t.produced : null;
  const cells = [
    ["produced", fmt(t.produced), "raw events"],
    ["valid", fmt(t.features), "feature vectors"],
    ["quarantined", fmt(t.quarantined), share === null ? "dead letters" : pct(share) + " of produced"],
    ["predictions", fmt(t.predictions), "scored by the app"],
    ["serving", t.serving_version ? "v" + t.serving_version : "–", `${fmt(t.versions)} versions published`],
    ["app accuracy", pct(t.scorer_rolling), "last 1,000 labelled"],
    ["drift alerts", fmt(t.drift_alerts), `${fmt(data.drift ? data.drift.windows : null)} windows`],
  ];
  document.getElementById("tiles").replaceChildren(...cells.map(([label, value, sub]) => {
    const tile = html("div", {class: "tile", "data-tile": label});
    tile.append(html("div", {class: "label"}, label), html("div", {class: "value"}, value), html("div", {class: "sub"}, sub));
    return tile;
  }));
}

function drawLag(data) {
  const groups = data.lag.groups;
  const series = groups.map((g, i) => ({name: g.group, label: shortGroup(g.group, data.namespace),
                                        color: PALETTE[i % PALETTE.length], points: g.points}));
  document.getElementById("lag-badges").replaceChildren(...groups.map((g) => {
    const status = g.status || "UNKNOWN";
    const badge = html("span", {class: "badge", "data-group": g.group, "data-status": status, title: g.reason || ""});
    badge.append(html("span", {class: `st st-${status}`}, status), document.createTextNode(shortGroup(g.group, data.namespace)));
    return badge;
  }));
  lineChart(document.getElementById("chart-lag"), "lag", series,
            {emptyText: groups.length ? "lag unknown: the broker could not be read" : "no consumer group has reported yet"});
  legend("legend-lag", series);
}

function drawThroughput(data) {
  // The labelled-features topic only carries data in delayed-label mode: left out while it is empty.
  const topics = data.throughput.topics.filter((t) => t.role !== "features_labelled" || t.total > 0);
  const series = topics.map((t, i) => ({
    name: t.topic, label: ROLE_NAMES[t.role] || t.role, color: PALETTE[i % PALETTE.length], points: t.points,
  }));
  lineChart(document.getElementById("chart-throughput"), "throughput", series,
            {emptyText: "needs two samples of the topics"});
  legend("legend-throughput", series, (v) => fmt(v) + "/s");
}

function drawAccuracy(data) {
  const acc = data.accuracy, now = data.generated_at;
  const scored = acc.versions.filter((v) => v.first_scored_at !== null && v.accuracy !== null)
    .sort((a, b) => a.first_scored_at - b.first_scored_at);
  const series = scored.map((v, i) => {
    const end = i + 1 < scored.length ? scored[i + 1].first_scored_at : Math.max(now || 0, v.first_scored_at);
    return {name: `v${v.version}`, label: `v${v.version}`, color: PALETTE[i % PALETTE.length], width: 3,
            points: [[v.first_scored_at, v.accuracy], [end, v.accuracy]]};
  });
  const rolling = {name: "rolling", label: "rolling (last 1,000)", color: "#7d879c", dash: "2 2", width: 1.5,
                   points: acc.rolling};
  const all = series.concat(rolling.points.some((p) => p[1] !== null) ? [rolling] : []);
  const markers = acc.swaps.map((s) => ({x: s.at, version: s.version, label: `v${s.version}`}));
  const ys = all.flatMap((s) => s.points.map((p) => p[1]).filter((y) => y !== null));
  const yMin = ys.length ? Math.max(0, Math.floor((Math.min(...ys) - 0.05) * 10) / 10) : 0;
  lineChart(document.getElementById("chart-accuracy"), "accuracy", all,
            {markers, yMin, yMax: 1, yFormat: (v) => (100 * v).toFixed(0) + "%", xMax: now,
             emptyText: "no labelled prediction yet"});
  const host = document.getElementById("chart-accuracy").querySelector("svg");
  if (host) scored.forEach((v) => {
    const g = host.querySelector(`g[data-series="v${v.version}"]`);
    if (g) { g.setAttribute("data-version", v.version); g.setAttribute("data-accuracy", v.accuracy); }
  });
  legend("legend-accuracy", all.slice(-6), pct);
}

function drawDeadLetters(data) {
  const items = data.dead_letters.reasons.map((r) => ({label: r.reason, value: r.count, color: "#d2495f"}));
  barChart(document.getElementById("chart-dead-letters"), "dead-letters", items,
           {emptyText: "no event quarantined", labelWidth: 170});
}

function drawDrift(data) {
  const threshold = data.psi_threshold;
  const items = data.drift.fields.map((f) => ({
    label: f.field, value: f.psi, color: f.psi >= threshold ? "#e53e3e" : "#3b6fd8",
    note: f.alerts ? `${f.alerts} alert${f.alerts > 1 ? "s" : ""}` : "",
  }));
  barChart(document.getElementById("chart-drift"), "drift", items,
           {threshold, format: (v) => v.toFixed(3), emptyText: "no monitoring window closed yet", max: 8,
            valueWidth: 112});
}

function drawStatus(data) {
  const table = html("table", {"data-table": "lag-status"});
  const head = html("tr");
  for (const [name, cls] of [["group"], ["status"], ["lag", "num"], ["oldest", "num"], ["partitions", "num"], ["why"]]) {
    head.append(html("th", {class: cls}, name));
  }
  table.append(head);
  for (const g of data.lag.groups) {
    const tr = html("tr", {"data-group": g.group, "data-status": g.status || "UNKNOWN"});
    const status = html("td");
    status.append(html("span", {class: `st st-${g.status || "UNKNOWN"}`}, g.status || "UNKNOWN"));
    tr.append(html("td", {title: g.group}, shortGroup(g.group, data.namespace)), status,
              html("td", {class: "num"}, fmt(g.total_lag)), html("td", {class: "num"}, ago(g.max_lag_seconds)),
              html("td", {class: "num"}, fmt((g.partitions || []).length)),
              html("td", {class: "reason", title: g.reason || ""}, g.reason || ""));
    table.append(tr);
  }
  document.getElementById("status-table").replaceChildren(table);
}

function render(data) {
  last = data;
  const groups = (data.groups || []).length;
  document.getElementById("meta").innerHTML = "";
  document.getElementById("meta").append(
    "namespace ", html("b", {}, data.namespace || "(none)"), "  ·  broker ", html("b", {}, data.bootstrap_servers),
    "  ·  model ", html("b", {}, data.model), `  ·  ${groups} component groups`);
  const conn = document.getElementById("conn");
  const degraded = data.errors && data.errors.length;
  conn.dataset.state = degraded ? "degraded" : "live";
  conn.textContent = data.generated_at ? (degraded ? "broker trouble · " : "live · ") + clock(data.generated_at) : "starting";
  const banner = document.getElementById("banner");
  banner.classList.toggle("shown", Boolean(degraded));
  banner.textContent = degraded ? "Last sample incomplete: " + data.errors.join("; ") : "";
  tiles(data);
  drawLag(data);
  drawThroughput(data);
  drawAccuracy(data);
  drawDeadLetters(data);
  drawDrift(data);
  drawStatus(data);
  const s = data.samples;
  document.getElementById("footer").textContent =
    `${s.kept} samples kept (${s.taken} taken, ${s.failed} incomplete), one every ${data.interval} s · ` +
    "data: /api/snapshot · Prometheus: /metrics";
  renders += 1;
  document.body.dataset.renders = renders;
}

async function poll() {
  try {
    const answer = await fetch("/api/snapshot", {cache: "no-store"});
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
  } catch (error) {
    const conn = document.getElementById("conn");
    conn.dataset.state = "down";
    conn.textContent = "monitor unreachable";
  }
  const every = last && last.interval ? Math.max(1, last.interval) : 2;
  setTimeout(poll, every * 1000);
}

window.addEventListener("resize", () => { if (last) render(last); });
poll();
