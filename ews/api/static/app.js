// Duty dashboard: region tree, live warnings (server-sent events), sensor map and chart.
// Plain JavaScript, no libraries and nothing fetched from outside this server, so the duty
// room keeps working without the internet. All text from the server goes in via textContent.
"use strict";

const LEVELS = ["none", "blue", "yellow", "orange", "red"];
const LEVEL_ZH = { none: "无", blue: "蓝色", yellow: "黄色", orange: "橙色", red: "红色" };
const LEVEL_COLOR = { none: "#3fae5a", blue: "#2f7de1", yellow: "#f2c200", orange: "#f47b20", red: "#e0262b" };
const HEALTH_COLOR = { ok: "#3fae5a", stale: "#8a96a3", fault: "#a56be0", unknown: "#4b5b6b" };
const HEALTH_ZH = { ok: "正常", stale: "数据中断", fault: "设备故障", unknown: "未上报" };
const KIND_ZH = { rain: "雨量", water_level: "水位", ponding: "积水", gas: "燃气", smoke: "烟感" };
const TIER_ZH = { district: "区", street: "街道", community: "社区" };
const CHART_HOURS = { rain: 12, water_level: 24 };
const TOKEN_KEY = "ews.token";

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  me: null, regions: [], sensors: [], warnings: new Map(),
  region: null, sensor: null, stream: null, refreshTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// times are shown in Beijing time whatever the browser's zone, as in every message and report
const BEIJING = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", hour12: false,
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
const BEIJING_CLOCK = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", hour12: false,
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });

function hhmm(ms) {
  const parts = Object.fromEntries(BEIJING.formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  return `${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
}

function toast(text, error) {
  const t = $("toast");
  t.textContent = text;
  t.className = error ? "error" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, error ? 8000 : 4000);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ Authorization: `Bearer ${state.token}` }, opts.headers);
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
    delete opts.json;
  }
  const r = await fetch(path, opts);
  if (r.status === 204) return null;
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const err = new ApiError(r.status, body);
    if (r.status === 401) showLogin(err.message);
    throw err;
  }
  return body;
}

// --- login ------------------------------------------------------------------------------

function showLogin(message) {
  if (state.stream) state.stream.abort();
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  try {
    await start();
    localStorage.setItem(TOKEN_KEY, state.token);
  } catch (e) {
    $("login-error").textContent = `登录失败：${e.message}`;
  }
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  state.token = "";
  showLogin("");
});

// --- loading ----------------------------------------------------------------------------

async function start() {
  state.me = await api("/api/v1/me");
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  const roleZh = { viewer: "查看", duty_officer: "值班员", admin: "管理员" }[state.me.role] || state.me.role;
  $("who").textContent = `${state.me.name}（${roleZh} · ${state.me.region_name}）`;
  await loadAll();
  connectEvents();
}

async function loadAll() {
  const [regions, sensors, warnings] = await Promise.all([
    api("/api/v1/regions"), api("/api/v1/sensors"), api("/api/v1/warnings?state=open&limit=1000"),
  ]);
  state.regions = regions.regions;
  state.sensors = sensors.sensors;
  state.warnings = new Map(warnings.warnings.map((w) => [w.id, w]));
  renderTree();
  renderMap();
  renderWarnings();
}

async function refreshSide() {
  const [regions, sensors] = await Promise.all([api("/api/v1/regions"), api("/api/v1/sensors")]);
  state.regions = regions.regions;
  state.sensors = sensors.sensors;
  renderTree();
  renderMap();
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  // one refresh of the tree and map per burst of events: in a storm they come many a second
  state.refreshTimer = setTimeout(() => refreshSide().catch(() => {}), 1500);
}

// --- live events (fetch streaming, so the token travels in a header, not in the URL) --------

function setLive(open, text) {
  const l = $("live");
  l.dataset.state = open ? "open" : "closed";
  l.textContent = `实时连接：${text}`;
}

async function connectEvents() {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  try {
    const r = await fetch("/api/v1/events", { headers: { Authorization: `Bearer ${state.token}` }, signal: ctl.signal });
    if (r.status === 401) { showLogin("令牌已失效，请重新登录"); return; }
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        handleFrame(frame);
      }
    }
    throw new Error("stream ended");
  } catch (e) {
    if (ctl.signal.aborted) return;
    setLive(false, "重连中…");
    setTimeout(() => { if (state.stream === ctl) { loadAll().catch(() => {}); connectEvents(); } }, 3000);
  }
}

function handleFrame(frame) {
  let event = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  if (!data.length) return;
  const msg = JSON.parse(data.join("\n"));
  if (event === "hello") {
    setLive(true, "已连接");
  } else if (event === "transition" || event === "acknowledged") {
    const w = msg.warning;
    if (w.state === "open") state.warnings.set(w.id, Object.assign(w, { _fresh: event === "transition" }));
    else state.warnings.delete(w.id);
    renderWarnings();
    scheduleRefresh();
    if (event === "transition" && msg.type === "open") toast(`新预警：${w.region.community.name} ${LEVEL_ZH[w.level]}${KIND_ZH[w.kind] || w.kind}`);
  } else if (event === "resync") {
    loadAll().catch(() => {});
  }
}

// --- region tree ------------------------------------------------------------------------

function renderTree() {
  const root = $("tree");
  root.replaceChildren(...state.regions.map(treeNode));
  const lg = $("legend");
  lg.replaceChildren(...LEVELS.map((lv) => el("span", {}, el("i", { class: "dot", "data-level": lv }),
    lv === "none" ? "无预警" : LEVEL_ZH[lv])));
}

function treeNode(n) {
  const c = n.counts;
  const total = c.blue + c.yellow + c.orange + c.red;
  const countText = total ? `${total} 条${n.unacknowledged ? `，${n.unacknowledged} 未确认` : ""}` : "";
  const label = el("div", { class: `node${state.region === n.code ? " selected" : ""}`,
    title: `${TIER_ZH[n.tier]} ${n.code}，监测点 ${n.sensors} 个`,
    onclick: () => selectRegion(n.code, n.name) },
  el("i", { class: "dot" }), el("span", { class: "name", text: n.name }), el("span", { class: "counts", text: countText }));
  const li = el("li", { class: `tier-${n.tier}`, "data-code": n.code, "data-level": n.level }, label);
  if (n.children.length) li.append(el("ul", {}, ...n.children.map(treeNode)));
  return li;
}

function selectRegion(code, name) {
  state.region = state.region === code ? null : code;
  $("filter-note").textContent = state.region ? `（${name}）` : "";
  $("clear-filter").hidden = !state.region;
  renderTree();
  renderWarnings();
  renderMap();
}
$("clear-filter").addEventListener("click", () => selectRegion(state.region, ""));

// --- warnings ---------------------------------------------------------------------------

function inRegion(code) { return !state.region || code.startsWith(state.region); }

function renderWarnings() {
  const rows = [...state.warnings.values()]
    .filter((w) => inRegion(w.region.community.code))
    .sort((a, b) => LEVELS.indexOf(b.level) - LEVELS.indexOf(a.level) || b.event_ts_ms - a.event_ts_ms);
  $("count").textContent = rows.length ? `${rows.length} 条` : "";
  $("no-warnings").hidden = rows.length > 0;
  $("warnings").querySelector("tbody").replaceChildren(...rows.map(warningRow));
}

function mayAct(w, action) {
  const me = state.me;
  if (!me || !me.may[action]) return false;
  return me.region === "*" || w.region.community.code.startsWith(me.region);
}

function warningRow(w) {
  const r = w.region;
  const where = r.community.code === r.street.code ? r.street.name : r.community.name;
  const value = w.value === null || w.value === undefined ? "—" : `${+w.value.toFixed(2)} ${w.unit}`;
  const limit = w.threshold === null || w.threshold === undefined ? "" : `阈值 ${+w.threshold.toFixed(2)} ${w.unit}`;
  const status = w.acknowledged ? "已确认" : "未确认";
  const who = w.acknowledged ? w.acknowledged_by || "" : (w.escalated_to ? `已升级至${TIER_ZH[w.escalated_to]}` : "");
  const actions = el("td", { class: "actions" });
  if (!w.acknowledged && mayAct(w, "acknowledge")) {
    actions.append(el("button", { class: "ack", type: "button", "data-action": "ack", onclick: () => openAck(w) }, "确认"));
  }
  if (mayAct(w, "silence")) {
    actions.append(el("button", { type: "button", "data-action": "silence", onclick: () => openSilence(w) }, "静默"));
  }
  const tr = el("tr", { "data-id": w.id, "data-level": w.level, "data-community": r.community.code,
    class: w._fresh ? "fresh" : null, title: w.message },
  el("td", { class: "level" }, el("span", { text: LEVEL_ZH[w.level] })),
  el("td", {}, el("span", { text: where }), el("span", { class: "sub", text: r.street.name })),
  el("td", { class: "kind", text: KIND_ZH[w.kind] || w.kind }),
  el("td", {}, el("span", { text: w.subject_name || w.subject }), el("span", { class: "sub", text: w.subject })),
  el("td", {}, el("span", { text: value }), el("span", { class: "sub", text: limit })),
  el("td", { class: "time", text: hhmm(w.event_ts_ms) }),
  el("td", { class: `state ${w.acknowledged ? "acked" : "unacked"}` }, el("span", { text: status }),
    el("span", { class: "sub", text: who })),
  actions);
  w._fresh = false;
  tr.addEventListener("dblclick", () => { const s = state.sensors.find((x) => x.id === w.subject); if (s) showChart(s); });
  return tr;
}

function regionPath(w) { return `${w.region.street.name} ${w.region.community.name}`; }

function openAck(w) {
  const d = $("ack-dialog");
  $("ack-text").textContent = `${regionPath(w)} · ${w.subject_name || w.subject} · ${LEVEL_ZH[w.level]}预警`;
  $("ack-comment").value = "";
  d.dataset.id = w.id;
  d.showModal();
}

function openSilence(w) {
  const d = $("silence-dialog");
  $("silence-text").textContent = `${regionPath(w)} · ${w.subject_name || w.subject} · ${w.rule_name || w.rule}`;
  $("silence-reason").value = "";
  d.dataset.id = w.id;
  d.showModal();
}

for (const d of document.querySelectorAll("dialog")) {
  d.querySelector("button.cancel").addEventListener("click", () => d.close());
}

$("ack-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const d = $("ack-dialog");
  try {
    const w = await api(`/api/v1/warnings/${encodeURIComponent(d.dataset.id)}/acknowledge`,
      { method: "POST", json: { comment: $("ack-comment").value } });
    state.warnings.set(w.id, w);
    renderWarnings();
    scheduleRefresh();
    d.close();
    toast("已确认");
  } catch (e) {
    toast(`确认失败：${e.message}`, true);
  }
});

$("silence-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const d = $("silence-dialog");
  const reason = $("silence-reason").value.trim();
  if (!reason) { toast("请填写静默原因", true); return; }
  try {
    const s = await api(`/api/v1/warnings/${encodeURIComponent(d.dataset.id)}/silence`,
      { method: "POST", json: { duration_s: Number($("silence-duration").value), reason } });
    d.close();
    toast(`已静默至 ${hhmm(s.ends_ts_ms)}`);
  } catch (e) {
    toast(`静默失败：${e.message}`, true);
  }
});

// --- sensor map: an equirectangular projection of the sensors' own coordinates ---------------

function sensorColor(s) {
  if (s.level !== "none") return LEVEL_COLOR[s.level];
  return HEALTH_COLOR[s.health];
}

function renderMap() {
  const m = $("map");
  const W = m.clientWidth || 600;
  const H = m.clientHeight || 400;
  m.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const shown = state.sensors.filter((s) => inRegion(s.region.community.code));
  m.replaceChildren();
  if (!shown.length) { $("map-note").textContent = "无监测点"; return; }
  const lats = shown.map((s) => s.lat), lons = shown.map((s) => s.lon);
  const lat0 = Math.min(...lats), lat1 = Math.max(...lats), lon0 = Math.min(...lons), lon1 = Math.max(...lons);
  const k = Math.cos(((lat0 + lat1) / 2) * Math.PI / 180);  // a degree of longitude is shorter
  const spanX = Math.max((lon1 - lon0) * k, 1e-3), spanY = Math.max(lat1 - lat0, 1e-3);
  const pad = 24, scale = Math.min((W - 2 * pad) / spanX, (H - 2 * pad) / spanY);
  const ox = (W - spanX * scale) / 2, oy = (H - spanY * scale) / 2;
  const x = (lon) => ox + (lon - lon0) * k * scale;
  const y = (lat) => H - oy - (lat - lat0) * scale;
  // street names at the centre of their sensors, for orientation without map tiles
  const streets = new Map();
  for (const s of shown) {
    const st = s.region.street;
    const acc = streets.get(st.code) || { name: st.name, x: 0, y: 0, n: 0 };
    acc.x += x(s.lon); acc.y += y(s.lat); acc.n += 1;
    streets.set(st.code, acc);
  }
  for (const st of streets.values()) {
    m.append(svg("text", { x: st.x / st.n, y: st.y / st.n, class: "street-label", "text-anchor": "middle" }, st.name));
  }
  // hazards last, so they are drawn on top
  const order = (s) => (s.level !== "none" ? 10 + LEVELS.indexOf(s.level) : { fault: 3, stale: 2, unknown: 1, ok: 0 }[s.health]);
  for (const s of [...shown].sort((a, b) => order(a) - order(b))) {
    const r = s.level !== "none" ? 7 : 4.5;
    const c = svg("circle", { cx: x(s.lon).toFixed(1), cy: y(s.lat).toFixed(1), r, fill: sensorColor(s),
      class: `sensor${state.sensor === s.id ? " selected" : ""}`, "data-sensor": s.id,
      "data-state": s.level !== "none" ? s.level : s.health });
    const last = s.last ? `${+s.last.value.toFixed(2)} ${s.unit}（${hhmm(s.last.ts_ms)}）` : "无数据";
    c.append(svg("title", {}, `${s.name || s.id}（${s.id}）\n${KIND_ZH[s.kind] || s.kind} · ${HEALTH_ZH[s.health]}`
      + `${s.level !== "none" ? ` · ${LEVEL_ZH[s.level]}预警` : ""}\n最新：${last}`));
    c.addEventListener("click", () => showChart(s));
    m.append(c);
  }
  const counts = {};
  for (const s of shown) { const key = s.level !== "none" ? "warn" : s.health; counts[key] = (counts[key] || 0) + 1; }
  $("map-note").textContent = `${shown.length} 个监测点，预警 ${counts.warn || 0}，中断 ${counts.stale || 0}，故障 ${counts.fault || 0}`;
  const lg = $("map-legend");
  lg.replaceChildren(
    ...["blue", "yellow", "orange", "red"].map((lv) => el("span", {}, el("i", { class: "dot", style: `background:${LEVEL_COLOR[lv]}` }), `${LEVEL_ZH[lv]}预警`)),
    ...Object.keys(HEALTH_ZH).map((h) => el("span", {}, el("i", { class: "dot", style: `background:${HEALTH_COLOR[h]}` }), HEALTH_ZH[h])),
  );
}

window.addEventListener("resize", () => { renderMap(); if (state.chart) drawChart(state.chart); });

// --- readings chart: the measures the rules compare, with the sensor's thresholds ------------

async function showChart(s) {
  state.sensor = s.id;
  renderMap();
  $("chart-title").replaceChildren(`监测曲线：${s.name || s.id}（${s.id}）`,
    el("small", { text: ` ${KIND_ZH[s.kind] || s.kind} · ${s.region.street.name} ${s.region.community.name}` }));
  try {
    const hours = CHART_HOURS[s.kind] || 6;
    const data = await api(`/api/v1/sensors/${encodeURIComponent(s.id)}/readings?hours=${hours}`);
    state.chart = data;
    drawChart(data);
  } catch (e) {
    $("chart").replaceChildren();
    $("chart-info").textContent = `读取失败：${e.message}`;
  }
}

function seriesLabel(sr) {
  if (sr.window_ms) return `${+(sr.window_ms / 3600000).toFixed(2)} 小时累计`;
  return "读数";
}

const SERIES_COLORS = ["#9fb3c8", "#5ec8f2", "#b39ddb", "#80cbc4"];

function drawChart(data) {
  const c = $("chart");
  const W = c.clientWidth || 600, H = c.clientHeight || 240;
  c.setAttribute("viewBox", `0 0 ${W} ${H}`);
  c.replaceChildren();
  const L = 48, R = 130, T = 12, B = 24;
  const series = data.series.filter((sr) => sr.points.length);
  const values = series.flatMap((sr) => sr.points.map((p) => p[1]));
  if (!values.length) {
    $("chart-info").textContent = "该时段没有读数";
    return;
  }
  const vmax = Math.max(...values), vmin = Math.min(0, ...values);
  // thresholds close enough to matter set the scale; the rest are listed below the chart
  const th = data.thresholds.filter((t) => series.some((sr) => sr.measure === t.measure));
  const lowest = th.length ? Math.min(...th.map((t) => t.value)) : -Infinity;
  const drawn = th.filter((t) => t.value <= Math.max(vmax * 2, lowest));
  const top = Math.max(vmax, ...drawn.map((t) => t.value)) * 1.08 || 1;
  const x = (t) => L + ((t - data.from_ms) / (data.until_ms - data.from_ms)) * (W - L - R);
  const y = (v) => H - B - ((v - vmin) / (top - vmin)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = vmin + ((top - vmin) * i) / 4;
    c.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    c.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, +v.toFixed(1)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = data.from_ms + ((data.until_ms - data.from_ms) * i) / 4;
    c.append(svg("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, hhmm(t).slice(6)));
  }
  c.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  c.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  for (const t of drawn) {
    const sr = series.find((s) => s.measure === t.measure);
    c.append(svg("line", { x1: L, x2: W - R, y1: y(t.value), y2: y(t.value), stroke: LEVEL_COLOR[t.level],
      "stroke-width": 1.5, "stroke-dasharray": "6 4", class: "threshold", "data-level": t.level, "data-measure": t.measure }));
    c.append(svg("text", { x: W - R + 4, y: y(t.value) + 4, fill: LEVEL_COLOR[t.level], style: `fill:${LEVEL_COLOR[t.level]}` },
      `${LEVEL_ZH[t.level]} ${seriesLabel(sr)} ${t.value}`));
  }
  series.forEach((sr, i) => {
    const pts = sr.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const many = series.length > 1 && !sr.window_ms;
    const color = SERIES_COLORS[i % SERIES_COLORS.length];
    c.append(svg("polyline", { points: pts, fill: "none", stroke: color,
      "stroke-width": many ? 1 : 2, opacity: many ? 0.6 : 1, class: "series", "data-measure": sr.measure }));
    if (sr.points.length <= 48) {  // sparse readings: mark each one, a lone reading is a dot
      for (const p of sr.points) c.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: color }));
    }
  });
  const hidden = th.length - drawn.length;
  $("chart-info").replaceChildren(
    ...series.map((sr, i) => el("span", { style: `color:${SERIES_COLORS[i % SERIES_COLORS.length]};margin-right:12px` },
      `— ${seriesLabel(sr)}（${data.unit}）`)),
    hidden > 0 ? `更高阈值 ${hidden} 条未画出` : "",
  );
}

// --- clock and periodic refresh (acknowledgements made elsewhere, escalations) ---------------

setInterval(() => { $("clock").textContent = `北京时间 ${BEIJING_CLOCK.format(new Date())}`; }, 1000);
setInterval(() => { if (state.me && !$("main").hidden) loadAll().catch(() => {}); }, 60000);

if (state.token) start().catch((e) => showLogin(e.status === 401 ? e.message : `无法连接服务：${e.message}`));
else showLogin("");
