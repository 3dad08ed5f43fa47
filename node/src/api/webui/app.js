// sensornet dashboard: vanilla JS, no dependencies. Reads the node's own API (/api/v0, POST
// as Kubo's RPC), follows reading/events (Server-Sent Events, read with fetch so the token
// can travel in a header), and draws SVG charts.
"use strict";

const TOKEN_KEY = "sensornet-api-token";
const STALE_MS = 60_000; // a source silent this long is marked stale
const MAX_POINTS = 20_000; // per source and chart, oldest dropped first
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
// US EPA PM2.5 breakpoints (µg/m³) of the AQI categories, with their official colours.
const AQI_BANDS = [
  [0, 12, "#00e400", "good"], [12, 35.4, "#ffff00", "moderate"],
  [35.4, 55.4, "#ff7e00", "unhealthy for sensitive groups"], [55.4, 150.4, "#ff0000", "unhealthy"],
  [150.4, 250.4, "#8f3f97", "very unhealthy"], [250.4, 1e9, "#7e0023", "hazardous"],
];
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  topics: [],         // topic names shown
  series: new Map(),  // topic -> Map(source -> [{t, v, lo, hi}])
  units: new Map(),   // topic -> unit
  latest: new Map(),  // "topic\u0000source" -> {value, unit, time, seq, aqi, live}
  rangeMs: 15 * 60_000,
  every: null,        // bucket width (ms) of the drawn history, null for raw readings
  skew: 0,            // node clock - browser clock
  stream: null,       // AbortController of the live stream
};

const $ = (sel) => document.querySelector(sel);

function countError(msg) {
  document.body.dataset.errors = String(Number(document.body.dataset.errors) + 1);
  const p = $("#errors");
  p.hidden = false;
  p.textContent = String(msg);
}
window.addEventListener("error", (e) => countError(e.message));
window.addEventListener("unhandledrejection", (e) => countError(e.reason));

class NeedToken extends Error {}

function headers() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path, params = []) {
  const q = new URLSearchParams(params).toString();
  const r = await fetch("/api/v0/" + path + (q ? "?" + q : ""), { method: "POST", headers: headers() });
  if (r.status === 401 || r.status === 403) throw new NeedToken(await errorText(r));
  if (!r.ok) throw new Error(path + ": " + (await errorText(r)));
  return r;
}

async function errorText(r) {
  try { return (await r.json()).Message || r.statusText; } catch (_) { return r.statusText; }
}

function askToken(message) {
  const f = $("#token-form");
  f.hidden = false;
  $("#token-error").textContent = sessionStorage.getItem(TOKEN_KEY) ? message : "";
  $("#token").focus();
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value);
  $("#token-form").hidden = true;
  start();
});

// ---- formatting ----
function fmtValue(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2); }
function fmtAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 129600) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function fmtTime(ms, spanMs) {
  const d = new Date(ms);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return spanMs > 36 * 3600_000 ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm : hm;
}
function aqiBand(v) { return AQI_BANDS.find(([lo, hi]) => v <= hi) || AQI_BANDS[AQI_BANDS.length - 1]; }
function now() { return Date.now() + state.skew; }
function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// ---- status panel and sources ----
async function loadStatus() {
  const s = await (await api("node/status")).json();
  state.skew = s.Now - Date.now();
  $("#node-id").textContent = s.ID;
  const ready = $("#ready");
  ready.textContent = s.Ready ? "ready" : "catching up";
  ready.className = "badge " + (s.Ready ? "ok" : "wait");
  const dl = $("#status-list");
  dl.replaceChildren();
  const rows = [
    ["readiness", s.Ready ? "ready" : "catching up"],
    ["peers", String(s.Peers.length)],
    ["store", s.Store.Blocks + " blocks, " + fmtBytes(s.Store.Bytes) + " indexed"],
    ["disk", s.Disk.Total ? fmtBytes(s.Disk.Free) + " free of " + fmtBytes(s.Disk.Total) : "…"],
    ["catch-up", s.Catchup.Fetched + " fetched, " + s.Catchup.Lag + " behind, " + s.Catchup.Gaps + " gaps"],
    ["holes", String(s.Catchup.Holes)],
  ];
  for (const [k, v] of rows) { dl.append(el("dt", {}, k), el("dd", { "data-key": k }, v)); }
  const tb = $("#topics tbody");
  tb.replaceChildren();
  for (const t of s.Topics) {
    const tr = el("tr", { "data-topic": t.Topic });
    tr.append(el("td", {}, t.Topic + (t.Subscribed ? "" : " (not subscribed)")),
      el("td", { class: "num" }, String(t.Peers)), el("td", { class: "num mesh" }, String(t.Mesh)),
      el("td", { class: "num" }, fmtBytes(t.Bytes)),
      el("td", {}, t.Retention.MaxAge + " / " + fmtBytes(t.Retention.MaxBytes)),
      el("td", { class: "num" }, String(t.Holes)));
    tb.append(tr);
  }
  const ul = $("#peers");
  ul.replaceChildren(...s.Peers.map((p) => el("li", {}, p.Addr + "/p2p/" + p.Peer)));
  for (const r of s.Sources) noteLatest(r, false);
  const topics = s.Topics.filter((t) => t.Subscribed).map((t) => t.Topic);
  for (const r of s.Sources) if (!topics.includes(r.topic)) topics.push(r.topic);
  return topics;
}

function noteLatest(r, live) {
  const key = r.topic + "\u0000" + r.source;
  const old = state.latest.get(key);
  if (old && old.time > r.time) return;
  state.latest.set(key, { value: r.value, unit: r.unit, time: r.time, seq: r.seq, aqi: r.aqi, live: live || (old && old.live && old.time === r.time) });
  if (!state.units.has(r.topic)) state.units.set(r.topic, r.unit);
}

function renderSources() {
  const tb = $("#sources tbody");
  const keys = [...state.latest.keys()].sort();
  const t = now();
  tb.replaceChildren(...keys.map((key) => {
    const [topic, source] = key.split("\u0000");
    const l = state.latest.get(key);
    const stale = t - l.time > STALE_MS;
    const tr = el("tr", { "data-topic": topic, "data-source": source, class: stale ? "stale" : "fresh" });
    const val = el("td", { class: "num value" });
    const span = el("span", {}, fmtValue(l.value) + " " + l.unit);
    if (topic === "air-quality") {
      const [, , colour, name] = aqiBand(l.value);
      span.className = "aqi";
      span.style.background = colour;
      if (colour === "#8f3f97" || colour === "#7e0023") span.style.color = "#fff";
      span.title = (l.aqi !== undefined ? "AQI " + l.aqi + ": " : "") + name;
    }
    val.append(span);
    tr.append(el("td", {}, topic), el("td", {}, source), val, el("td", { class: "num age" }, fmtAge(t - l.time)), el("td", { class: "num" }, String(l.seq)));
    return tr;
  }));
}

// ---- charts ----
function rangeChoice() {
  const v = $("#range").value;
  const ms = { "15m": 15 * 60_000, "1h": 3600_000, "6h": 6 * 3600_000, "24h": 86400_000, "7days": 7 * 86400_000 }[v];
  // Raw readings for the live quarter hour; about 240 buckets per line beyond it.
  const every = v === "15m" ? null : Math.max(1000, Math.ceil(ms / 240 / 1000) * 1000);
  return { since: v, ms, every };
}

async function loadHistory(topic) {
  const { since, ms, every } = rangeChoice();
  const params = [["topic", topic], ["since", since]];
  if (every) params.push(["every", Math.round(every / 1000) + "s"]);
  else params.push(["limit", "50000"]);
  const text = await (await api("reading/history", params)).text();
  const lines = new Map();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const r = JSON.parse(line);
    if (r.Type === "error") throw new Error(r.Message);
    const pt = every ? { t: r.start + every / 2, v: r.mean, lo: r.min, hi: r.max } : { t: r.time, v: r.value };
    if (!lines.has(r.source)) lines.set(r.source, []);
    lines.get(r.source).push(pt);
    if (r.unit) state.units.set(topic, r.unit);
    if (!every) noteLatest(r, false);
  }
  for (const pts of lines.values()) pts.sort((a, b) => a.t - b.t);
  state.series.set(topic, lines);
  state.rangeMs = ms;
  state.every = every;
}

function chartCard(topic) {
  let card = document.querySelector(`.chart[data-topic="${CSS.escape(topic)}"]`);
  if (card) return card;
  card = el("section", { class: "chart", "data-topic": topic });
  card.append(el("h2", {}, topic), svg("svg", { viewBox: "0 0 600 240", preserveAspectRatio: "none", role: "img", "aria-label": topic + " chart" }), el("div", { class: "legend" }));
  $("#charts").append(card);
  return card;
}

function gapLimit(pts) {
  if (state.every) return state.every * 1.5;
  // Raw readings: a pause of three typical intervals (at least 5 s) breaks the line.
  const d = [];
  for (let i = 1; i < pts.length; i++) d.push(pts[i].t - pts[i - 1].t);
  d.sort((a, b) => a - b);
  return Math.max(5000, 3 * (d[Math.floor(d.length / 2)] || 0));
}

function drawChart(topic) {
  const card = chartCard(topic);
  const unit = state.units.get(topic) || "";
  card.querySelector("h2").textContent = topic + (unit ? " (" + unit + ")" : "");
  const box = card.querySelector("svg");
  box.replaceChildren();
  const W = 600, H = 240, L = 44, R = 8, T = 8, B = 22;
  const t1 = now(), t0 = t1 - state.rangeMs;
  const lines = state.series.get(topic) || new Map();
  let lo = Infinity, hi = -Infinity;
  for (const pts of lines.values()) for (const p of pts) {
    if (p.t < t0) continue;
    lo = Math.min(lo, p.lo ?? p.v); hi = Math.max(hi, p.hi ?? p.v);
  }
  const legend = card.querySelector(".legend");
  legend.replaceChildren();
  if (lo === Infinity) {
    const e = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    e.textContent = "no readings in this range";
    box.append(e);
    return;
  }
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  if (topic === "air-quality") {
    for (const [blo, bhi, colour] of AQI_BANDS) {
      const a = Math.max(lo, blo), b = Math.min(hi, bhi);
      if (a >= b) continue;
      box.append(svg("rect", { x: L, width: W - L - R, y: y(b), height: y(a) - y(b), fill: colour, "fill-opacity": 0.18 }));
    }
  }
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4, yy = y(v);
    box.append(svg("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "grid" }));
    const label = svg("text", { x: L - 4, y: yy + 4, "text-anchor": "end", class: "axis" });
    label.textContent = fmtValue(v);
    box.append(label);
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + ((t1 - t0) * i) / 3;
    const label = svg("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle", class: "axis" });
    label.textContent = fmtTime(t, state.rangeMs);
    box.append(label);
  }
  [...lines.keys()].sort().forEach((source, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = lines.get(source).filter((p) => p.t >= t0);
    const gap = gapLimit(pts);
    let d = "", band = "";
    pts.forEach((p, j) => {
      const move = j === 0 || p.t - pts[j - 1].t > gap; // a gap: the line breaks
      d += (move ? "M" : "L") + x(p.t).toFixed(1) + " " + y(p.v).toFixed(1);
      if (p.lo !== undefined) band += "M" + x(p.t).toFixed(1) + " " + y(p.lo).toFixed(1) + "V" + y(p.hi).toFixed(1);
    });
    if (band) box.append(svg("path", { d: band, stroke: colour, "stroke-opacity": 0.25, "stroke-width": 3, fill: "none" }));
    box.append(svg("path", { d, stroke: colour, "stroke-width": 1.6, fill: "none", "vector-effect": "non-scaling-stroke", "data-source": source }));
    const last = pts[pts.length - 1];
    if (last && (pts.length === 1 || last.t - pts[pts.length - 2].t > gap)) {
      box.append(svg("circle", { cx: x(last.t), cy: y(last.v), r: 2.5, fill: colour }));
    }
    const item = el("span", { "data-source": source });
    const swatch = el("i");
    swatch.style.background = colour;
    item.append(swatch, document.createTextNode(source));
    legend.append(item);
  });
}

// ---- live feed (Server-Sent Events over fetch) ----
async function follow(topics) {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  const q = new URLSearchParams(topics.map((t) => ["topic", t])).toString();
  try {
    const r = await fetch("/api/v0/reading/events?" + q, { method: "POST", headers: headers(), signal: ctl.signal });
    if (r.status === 401 || r.status === 403) { askToken(await errorText(r)); return; }
    if (!r.ok) throw new Error("reading/events: " + (await errorText(r)));
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        onEvent(ev);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
    console.warn("live stream broke, reconnecting", e);
  }
  if (!ctl.signal.aborted) setTimeout(() => follow(topics), 2000);
}

function onEvent(block) {
  let type = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (type !== "reading" || !data) return;
  const r = JSON.parse(data);
  noteLatest(r, true);
  if (!state.series.has(r.topic)) state.series.set(r.topic, new Map());
  const lines = state.series.get(r.topic);
  if (!lines.has(r.source)) lines.set(r.source, []);
  const pts = lines.get(r.source);
  pts.push({ t: r.time, v: r.value });
  if (pts.length > 1 && pts[pts.length - 2].t > r.time) pts.sort((a, b) => a.t - b.t);
  if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
  document.body.dataset.live = String(Number(document.body.dataset.live) + 1);
  const li = el("li", { "data-cid": r.cid, "data-source": r.source }, `${r.topic} ${r.source} ${fmtValue(r.value)} ${r.unit} · seq ${r.seq}`);
  const list = $("#recent");
  list.prepend(li);
  while (list.children.length > 30) list.lastChild.remove();
  dirty.add(r.topic);
}

// ---- wiring ----
const dirty = new Set();
let statusTimer = null;

async function drawAll() {
  for (const t of state.topics) drawChart(t);
  renderSources();
}

async function reloadHistory() {
  await Promise.all(state.topics.map(loadHistory));
  document.body.dataset.range = $("#range").value;
  drawAll();
}

async function start() {
  try {
    state.topics = await loadStatus();
  } catch (e) {
    if (e instanceof NeedToken) { askToken(e.message); return; }
    throw e;
  }
  await reloadHistory();
  follow(state.topics);
  document.body.dataset.ready = "1";
  clearInterval(statusTimer);
  statusTimer = setInterval(async () => {
    try { await loadStatus(); } catch (e) { if (e instanceof NeedToken) askToken(e.message); else console.warn(e); }
  }, 5000);
}

$("#range").addEventListener("change", () => reloadHistory());
// Charts redraw at most once a second; ages tick every second.
setInterval(() => {
  if (!document.body.dataset.ready) return;
  for (const t of dirty) drawChart(t);
  dirty.clear();
  renderSources();
}, 1000);
start();
