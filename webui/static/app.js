// HVMind's jobs timeline: a canvas per view, redrawn ten times a second
// from the state the server's event stream keeps up to date.
'use strict';

const TASK_COLOURS = { hack: '#e8a33d', grow: '#3aa35b', weaken: '#3f7fd9', sleep: '#9b7fd1' };
const RED = '#d62728';
const LABEL_W = 150;       // the names' column, CSS px
const AXIS_H = 22;         // the time axis above the rows
const CHART_H = 96;

const state = {
  jobs: new Map(),         // id -> job view
  charts: new Map(),       // chart name -> [{t, v, job}] in time order
  pointKeys: new Set(),
  marks: [], markKeys: new Set(),
  desynced: new Set(),     // batches a mark says went wrong
  status: null,
  offset: 0,               // server time - Date.now()
  keepMs: 600000,
  connected: false, everConnected: false, lostAt: 0,
  paused: false, windowMs: 20000, viewEnd: 0,
  hoverBatch: '', hoverJob: '',
};
// What the last frame drew, for the tooltip and for tests.
const view = { state, drawn: [], marksDrawn: [], rows: [], frames: 0, connected: false, snapshots: 0 };
window.hvmind = view;

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + state.offset;

function colour(task) {
  if (TASK_COLOURS[task]) return TASK_COLOURS[task];
  let h = 0;
  for (const c of task) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 55%, 55%)`;
}

// ---- the stream ----

let es = null;
function connect() {
  if (es) es.close();
  es = new EventSource('/events');
  es.addEventListener('snapshot', (e) => {
    const s = JSON.parse(e.data);
    state.jobs.clear(); state.charts.clear(); state.pointKeys.clear();
    state.marks = []; state.markKeys.clear(); state.desynced.clear();
    state.offset = s.now - Date.now();
    state.keepMs = s.keepMs || state.keepMs;
    for (const j of s.jobs || []) state.jobs.set(j.id, j);
    addPoints(s.points || []);
    addMarks(s.marks || []);
    if (s.status) setStatus(s.status);
    view.snapshots++;
    setConnected(true);
    draw();
  });
  es.addEventListener('delta', (e) => {
    const d = JSON.parse(e.data);
    state.offset = d.now - Date.now();
    for (const j of d.jobs || []) state.jobs.set(j.id, j);
    addPoints(d.points || []);
    addMarks(d.marks || []);
  });
  es.addEventListener('status', (e) => setStatus(JSON.parse(e.data)));
  es.onopen = () => setConnected(true);
  es.onerror = () => {
    setConnected(false);
    // A stream the server refused (not a broken one) is not retried by
    // the browser: ask again.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}

function setConnected(on) {
  if (!on && state.connected) state.lostAt = now();
  state.connected = on;
  view.connected = on;
  if (on) state.everConnected = true;
  const banner = $('banner');
  if (on) {
    banner.hidden = true;
  } else if (state.everConnected) {
    banner.hidden = false;
    banner.textContent = `Connection to the pool lost at ${clock(state.lostAt || now())}: reconnecting… (what is drawn is from before)`;
  }
  badge();
}

function badge() {
  const b = $('conn');
  if (!state.connected) {
    b.className = 'badge ' + (state.everConnected ? 'lost' : 'wait');
    b.textContent = state.everConnected ? 'disconnected' : 'connecting…';
  } else if (state.paused) {
    b.className = 'badge paused'; b.textContent = 'paused';
  } else {
    b.className = 'badge live'; b.textContent = 'live';
  }
}

const pointKey = (p) => p.chart + '\u0000' + (p.job || '') + '\u0000' + p.t;
const markKey = (m) => [m.source, m.kind, m.batch, m.time].join('\u0000');

function addPoints(points) {
  for (const p of points) {
    const key = pointKey(p);
    if (state.pointKeys.has(key)) continue;
    state.pointKeys.add(key);
    let s = state.charts.get(p.chart);
    if (!s) { s = []; state.charts.set(p.chart, s); }
    s.push(p);
    // Records come nearly in time order: a short insertion keeps it.
    for (let i = s.length - 1; i > 0 && s[i - 1].t > s[i].t; i--) [s[i - 1], s[i]] = [s[i], s[i - 1]];
  }
}

function addMarks(marks) {
  for (const m of marks) {
    const key = markKey(m);
    if (state.markKeys.has(key)) continue;
    state.markKeys.add(key);
    state.marks.push(m);
    if (m.batch && m.level === 'error') state.desynced.add(m.batch);
  }
}

function trim() {
  const cut = now() - state.keepMs;
  for (const [id, j] of state.jobs) if (Math.max(j.end, j.actualEnd || 0) < cut) state.jobs.delete(id);
  for (const [name, s] of state.charts) {
    let i = 0;
    while (i < s.length && s[i].t < cut) i++;
    if (i) {
      for (const p of s.slice(0, i)) state.pointKeys.delete(pointKey(p));
      s.splice(0, i);
    }
    if (!s.length) state.charts.delete(name);
  }
  const old = state.marks.filter((m) => m.time < cut);
  if (old.length) {
    state.marks = state.marks.filter((m) => m.time >= cut);
    for (const m of old) state.markKeys.delete(markKey(m));
    state.desynced = new Set(state.marks.filter((m) => m.batch && m.level === 'error').map((m) => m.batch));
  }
}

// ---- the header ----

function setStatus(st) {
  state.status = st;
  const f = [];
  const alive = (st.workers || []).filter((w) => w.alive).length;
  f.push(['workers', `${alive} / ${(st.workers || []).length}`]);
  if (st.hosts && st.hosts.length) f.push(['hosts', String(st.hosts.length)]);
  const pct = st.threadsTotal ? Math.round(100 * st.threadsBusy / st.threadsTotal) : 0;
  f.push(['threads busy', `${st.threadsBusy} / ${st.threadsTotal} (${pct}%)`]);
  f.push(['in flight', String(st.inFlight)]);
  const ended = Object.entries(st.ended || {}).sort().map(([k, v]) => `${k} ${v}`).join(' · ');
  if (ended) f.push(['ended', ended]);
  if (st.driftP99us) f.push(['start drift p50/p99', `${fmtUs(st.driftP50us)} / ${fmtUs(st.driftP99us)}`]);
  for (const x of st.facts || []) f.push([x.name, x.value]);
  const facts = $('facts');
  facts.replaceChildren(...f.map(([k, v]) => {
    const s = document.createElement('span');
    s.dataset.fact = k;
    s.append(k + ' ');
    const b = document.createElement('b'); b.textContent = v; s.append(b);
    return s;
  }));
  tables(st);
}

function tables(st) {
  const t = document.createElement('table');
  t.innerHTML = '<tr><th>worker</th><th>host</th><th>threads busy</th></tr>';
  for (const w of st.workers || []) {
    const r = t.insertRow();
    if (!w.alive) r.className = 'dead';
    for (const c of [w.id, w.host, `${w.busy} / ${w.threads}`]) r.insertCell().textContent = c;
  }
  const h = document.createElement('table');
  h.innerHTML = '<tr><th>host</th><th>cores</th><th>threads held</th></tr>';
  for (const x of st.hosts || []) {
    const r = h.insertRow();
    for (const c of [x.name, x.cores, `${x.maxThreads - x.freeThreads} / ${x.maxThreads}`]) r.insertCell().textContent = c;
  }
  $('tables').replaceChildren(t, h);
}

function fmtUs(us) {
  if (Math.abs(us) < 1000) return `${us.toFixed(1)} µs`;
  if (Math.abs(us) < 1e6) return `${(us / 1000).toFixed(1)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}
function fmtMs(ms) { return fmtUs(ms * 1000); }
function fmtSpan(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120000) return `${+(ms / 1000).toFixed(1)} s`;
  return `${+(ms / 60000).toFixed(1)} min`;
}
function clock(ms, withMs) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const s = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return withMs ? `${s}.${p(d.getMilliseconds(), 3)}` : s;
}
function fmtValue(v) {
  const a = Math.abs(v);
  if (a >= 1e12) return (v / 1e12).toFixed(2) + 't';
  if (a >= 1e9) return (v / 1e9).toFixed(2) + 'b';
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'm';
  if (a >= 1e3) return (v / 1e3).toFixed(2) + 'k';
  return (+v.toFixed(3)).toString();
}

// ---- drawing ----

function range() {
  const end = state.paused ? state.viewEnd : now() + state.windowMs * 0.25;
  return [end - state.windowMs, end];
}

function sizeCanvas(c, cssH) {
  const dpr = window.devicePixelRatio || 1;
  const w = c.parentElement.clientWidth || document.body.clientWidth;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(cssH * dpr)) {
    c.width = Math.round(w * dpr); c.height = Math.round(cssH * dpr);
    c.style.height = cssH + 'px';
  }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  return [g, w];
}

function natural(a, b) { return a.localeCompare(b, undefined, { numeric: true }); }

// rows lays the workers out: each gets as many lanes as its jobs in view
// overlap, and a height to hold them.
const MAX_ROWS_H = 12000; // CSS px: a canvas must stay drawable
const IDLE_ROWS = 100;     // idle workers get a row when there are at most this many

function rows(t0, t1) {
  const by = new Map();
  const workers = (state.status && state.status.workers) || [];
  if (workers.length <= IDLE_ROWS) for (const w of workers) if (w.alive) by.set(w.id, []);
  for (const j of state.jobs.values()) {
    const end = Math.max(j.end, j.actualEnd || 0);
    if (end < t0 || j.start > t1) continue;
    const w = j.worker || '(unplaced)';
    if (!by.has(w)) by.set(w, []);
    by.get(w).push(j);
  }
  const out = [];
  let y = AXIS_H;
  view.hiddenRows = 0;
  for (const id of [...by.keys()].sort(natural)) {
    if (y > MAX_ROWS_H) { view.hiddenRows++; continue; }
    const jobs = by.get(id).sort((a, b) => a.start - b.start || natural(a.id, b.id));
    const laneEnds = [];
    const lanes = new Map();
    for (const j of jobs) {
      let l = laneEnds.findIndex((e) => e <= j.start);
      if (l < 0) { l = laneEnds.length; laneEnds.push(0); }
      laneEnds[l] = Math.max(j.end, j.actualEnd || 0);
      lanes.set(j.id, l);
    }
    const n = Math.max(1, laneEnds.length);
    const laneH = n <= 4 ? 10 : Math.max(1, Math.floor(60 / n));
    const h = Math.max(18, Math.min(n * laneH, 60) + 6); // beyond 60 lanes, lanes wrap
    out.push({ id, y, h, laneH, jobs, lanes });
    y += h;
  }
  return [out, y];
}

function ticks(t0, t1, width) {
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000];
  const want = (t1 - t0) / Math.max(2, width / 110);
  const step = steps.find((s) => s >= want) || 600000;
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
  return [out, step];
}

function draw() {
  view.frames++;
  const [t0, t1] = range();
  $('span').textContent = fmtSpan(state.windowMs);
  const [layout, rowsEnd] = rows(t0, t1);
  const height = rowsEnd + (view.hiddenRows ? 20 : 0);
  const c = $('timeline');
  const [g, w] = sizeCanvas(c, Math.max(height + 4, 80));
  const plotW = w - LABEL_W - 8;
  const X = (t) => LABEL_W + (t - t0) / (t1 - t0) * plotW;
  g.clearRect(0, 0, w, height + 4);
  g.font = '11px system-ui, sans-serif';
  g.textBaseline = 'middle';

  // Axis and grid.
  const [ts, step] = ticks(t0, t1, plotW);
  g.strokeStyle = '#e6e6e6'; g.fillStyle = '#777'; g.lineWidth = 1;
  for (const t of ts) {
    const x = Math.round(X(t)) + 0.5;
    g.beginPath(); g.moveTo(x, AXIS_H - 4); g.lineTo(x, height); g.stroke();
    g.fillText(clock(t, step < 1000), x + 3, 9);
  }

  // Rows.
  const drawn = [];
  layout.forEach((r, i) => {
    if (i % 2) { g.fillStyle = '#f3f3f1'; g.fillRect(0, r.y, w, r.h); }
    const alive = !state.status || (state.status.workers || []).some((x) => x.id === r.id && x.alive);
    g.fillStyle = alive ? '#333' : '#aaa';
    g.fillText(r.id, 6, r.y + r.h / 2);
    g.save();
    g.beginPath(); g.rect(LABEL_W, r.y, plotW, r.h); g.clip();
    for (const j of r.jobs) {
      const lane = r.lanes.get(j.id);
      const y = r.y + 3 + (lane % Math.max(1, Math.floor((r.h - 6) / r.laneH))) * r.laneH;
      const bh = Math.max(1, r.laneH - (r.laneH > 3 ? 1 : 0));
      const x0 = X(j.start), x1 = Math.max(X(j.end), x0 + 1);
      const bad = j.status === 'missed' || j.status === 'failed';
      const desync = !!j.batch && state.desynced.has(j.batch);
      g.globalAlpha = j.status === 'cancelled' ? 0.35 : (j.status ? 0.9 : 0.6);
      g.fillStyle = bad ? RED : colour(j.task);
      g.fillRect(x0, y, x1 - x0, bh);
      g.globalAlpha = 1;
      if (desync || (state.hoverBatch && j.batch === state.hoverBatch)) {
        g.strokeStyle = desync ? RED : '#111';
        g.lineWidth = desync && state.hoverBatch !== j.batch ? 1.5 : 2;
        g.strokeRect(x0 + 0.5, y + 0.5, Math.max(1, x1 - x0 - 1), Math.max(1, bh - 1));
      }
      let ax0 = null, ax1 = null;
      if (j.actualStart) {
        ax0 = X(j.actualStart);
        g.fillStyle = '#000'; g.fillRect(ax0 - 0.75, y - 1, 1.5, bh + 2);
      }
      if (j.actualEnd) {
        ax1 = X(j.actualEnd);
        g.fillStyle = '#000'; g.fillRect(ax1 - 0.75, y - 1, 1.5, bh + 2);
      }
      if (x1 >= LABEL_W && x0 <= LABEL_W + plotW) {
        drawn.push({ id: j.id, batch: j.batch || '', task: j.task, worker: r.id, status: j.status || '',
          x0, x1, y, h: bh, red: bad, desync, actualStartX: ax0, actualEndX: ax1, start: j.start });
      }
    }
    g.restore();
  });

  if (view.hiddenRows) {
    g.fillStyle = '#777';
    g.fillText(`… and ${view.hiddenRows} more workers with jobs in view`, 6, rowsEnd + 10);
  }

  // Now, and the marks.
  const nx = X(now());
  g.strokeStyle = '#222'; g.setLineDash([4, 3]);
  g.beginPath(); g.moveTo(nx, AXIS_H - 6); g.lineTo(nx, height); g.stroke();
  g.setLineDash([]);
  const marksDrawn = [];
  for (const m of state.marks) {
    if (m.time < t0 || m.time > t1) continue;
    const x = X(m.time);
    g.strokeStyle = m.level === 'error' ? RED : '#555'; g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(x, AXIS_H - 6); g.lineTo(x, height); g.stroke();
    g.fillStyle = g.strokeStyle; g.fillText(m.kind, x + 3, AXIS_H + 4);
    marksDrawn.push({ kind: m.kind, batch: m.batch || '', level: m.level || '', x, note: m.note || '' });
  }
  g.lineWidth = 1;
  view.drawn = drawn;
  view.marksDrawn = marksDrawn;
  view.rows = layout.map((r) => ({ id: r.id, y: r.y, h: r.h, jobs: r.jobs.length }));
  $('empty').hidden = state.jobs.size > 0;
  drawCharts(t0, t1, X, w);
  badge();
}

function drawCharts(t0, t1, X, w) {
  const box = $('charts');
  const names = [...state.charts.keys()].sort(natural);
  while (box.children.length > names.length) box.lastChild.remove();
  while (box.children.length < names.length) box.append(document.createElement('canvas'));
  names.forEach((name, i) => {
    const c = box.children[i];
    c.dataset.chart = name;
    const [g] = sizeCanvas(c, CHART_H);
    g.clearRect(0, 0, w, CHART_H);
    const pts = state.charts.get(name);
    // The value in force at t0 is the last before it.
    let first = 0;
    while (first < pts.length && pts[first].t < t0) first++;
    const from = Math.max(0, first - 1);
    let to = first;
    while (to < pts.length && pts[to].t <= t1) to++;
    const vis = pts.slice(from, to);
    g.font = '11px system-ui, sans-serif'; g.textBaseline = 'middle';
    g.fillStyle = '#333'; g.fillText(name, 6, 12);
    if (vis.length) g.fillText(fmtValue(vis[vis.length - 1].v), 6, 28);
    g.strokeStyle = '#e6e6e6'; g.strokeRect(LABEL_W + 0.5, 4.5, w - LABEL_W - 9, CHART_H - 9);
    if (!vis.length) return;
    let lo = Infinity, hi = -Infinity;
    for (const p of vis) { lo = Math.min(lo, p.v); hi = Math.max(hi, p.v); }
    if (hi - lo < 1e-9 * Math.max(1, Math.abs(hi))) { lo -= 1; hi += 1; }
    const Y = (v) => CHART_H - 8 - (v - lo) / (hi - lo) * (CHART_H - 18);
    g.fillStyle = '#999';
    g.fillText(fmtValue(hi), w - 60, 12); g.fillText(fmtValue(lo), w - 60, CHART_H - 12);
    g.save(); g.beginPath(); g.rect(LABEL_W, 0, w - LABEL_W - 8, CHART_H); g.clip();
    // A value holds until the next landing changes it.
    g.strokeStyle = '#555'; g.lineWidth = 1.2; g.beginPath();
    vis.forEach((p, k) => {
      const x = X(p.t), y = Y(p.v);
      if (k === 0) g.moveTo(x, y); else { g.lineTo(x, Y(vis[k - 1].v)); g.lineTo(x, y); }
    });
    g.lineTo(X(Math.min(t1, now())), Y(vis[vis.length - 1].v));
    g.stroke();
    for (const p of vis) {
      const j = p.job && state.jobs.get(p.job);
      g.fillStyle = j ? colour(j.task) : '#555';
      g.beginPath(); g.arc(X(p.t), Y(p.v), 2.5, 0, 2 * Math.PI); g.fill();
    }
    for (const m of state.marks) {
      if (m.time < t0 || m.time > t1 || m.level !== 'error') continue;
      g.strokeStyle = RED; g.lineWidth = 1.5;
      g.beginPath(); g.moveTo(X(m.time), 0); g.lineTo(X(m.time), CHART_H); g.stroke();
    }
    g.restore();
  });
}

// ---- interaction ----

function legend() {
  const items = Object.entries(TASK_COLOURS).map(([t, c]) => `<span><i style="background:${c}"></i>${t}</span>`);
  items.push(`<span><i style="background:${RED}"></i>missed or failed</span>`);
  items.push(`<span><i style="border:2px solid ${RED}"></i>batch desynced</span>`);
  items.push('<span><i style="background:#000;width:2px"></i>actual start and end</span>');
  items.push('<span>bars: scheduled start to end · hover: the job and its batch · wheel: zoom · drag: pan · space: pause</span>');
  $('legend').innerHTML = items.join('');
}

function setPaused(p) {
  if (p && !state.paused) state.viewEnd = range()[1];
  state.paused = p;
  $('pause').textContent = p ? 'Follow' : 'Pause';
  $('pause').classList.toggle('on', p);
  draw();
}

function zoom(f, atX) {
  const [t0, t1] = range();
  const c = $('timeline');
  const plotW = c.clientWidth - LABEL_W - 8;
  const next = Math.min(Math.max(state.windowMs * f, 100), state.keepMs);
  if (state.paused && atX != null) {
    const at = t0 + (atX - LABEL_W) / plotW * (t1 - t0);
    const frac = (t1 - at) / (t1 - t0);
    state.viewEnd = at + frac * next;
  }
  state.windowMs = next;
  draw();
}

function hit(x, y) {
  for (let i = view.drawn.length - 1; i >= 0; i--) {
    const d = view.drawn[i];
    if (x >= d.x0 - 1 && x <= d.x1 + 1 && y >= d.y - 1 && y <= d.y + d.h + 1) return d;
  }
  return null;
}

function tooltip(d, ev) {
  const tip = $('tooltip');
  if (!d) { tip.hidden = true; return; }
  const j = state.jobs.get(d.id);
  if (!j) { tip.hidden = true; return; }
  const lines = [`${j.task} × ${j.threads} threads on ${j.worker || '?'}`, `job ${j.id}`];
  if (j.batch) lines.push(`batch ${j.batch}`);
  lines.push(`scheduled ${clock(j.start, true)} → ${clock(j.end, true)} (${fmtMs(j.end - j.start)})${j.asap ? ', as soon as possible' : ''}`);
  if (j.actualStart) lines.push(`started ${clock(j.actualStart, true)} (${j.asap ? 'waited' : 'off by'} ${fmtMs(j.actualStart - j.start)})`);
  if (j.actualEnd) lines.push(`ended ${clock(j.actualEnd, true)} (off by ${fmtMs(j.actualEnd - j.end)})`);
  lines.push(j.status ? `${j.status}${j.reason ? ': ' + j.reason : ''}` : 'no record yet');
  if (j.batch && state.desynced.has(j.batch)) {
    const m = state.marks.find((x) => x.batch === j.batch && x.level === 'error');
    lines.push(`batch ${m ? m.kind + ': ' + m.note : 'desynced'}`);
  }
  tip.textContent = lines.join('\n');
  tip.hidden = false;
  tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 430) + 'px';
  tip.style.top = (ev.clientY + 14) + 'px';
}

function wire() {
  legend();
  $('pause').onclick = () => setPaused(!state.paused);
  $('zoomin').onclick = () => zoom(1 / 1.5);
  $('zoomout').onclick = () => zoom(1.5);
  $('now').onclick = () => setPaused(false);
  const c = $('timeline');
  let drag = null;
  c.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const r = c.getBoundingClientRect();
    zoom(ev.deltaY > 0 ? 1.25 : 0.8, ev.clientX - r.left);
  }, { passive: false });
  c.addEventListener('mousedown', (ev) => {
    if (!state.paused) setPaused(true);
    drag = { x: ev.clientX, end: state.viewEnd };
  });
  window.addEventListener('mouseup', () => { drag = null; });
  c.addEventListener('mousemove', (ev) => {
    const r = c.getBoundingClientRect();
    if (drag) {
      const plotW = c.clientWidth - LABEL_W - 8;
      state.viewEnd = drag.end - (ev.clientX - drag.x) / plotW * state.windowMs;
      draw();
      return;
    }
    const d = hit(ev.clientX - r.left, ev.clientY - r.top);
    const batch = d ? d.batch : '';
    tooltip(d, ev);
    if (batch !== state.hoverBatch || (d && d.id) !== state.hoverJob) {
      state.hoverBatch = batch; state.hoverJob = d ? d.id : '';
      draw();
    }
  });
  c.addEventListener('mouseleave', () => { tooltip(null); state.hoverBatch = ''; state.hoverJob = ''; draw(); });
  window.addEventListener('keydown', (ev) => {
    if (ev.target.tagName === 'INPUT') return;
    if (ev.key === ' ') { ev.preventDefault(); setPaused(!state.paused); }
    if (ev.key === '+' || ev.key === '=') zoom(1 / 1.5);
    if (ev.key === '-') zoom(1.5);
  });
  window.addEventListener('resize', draw);
}

wire();
connect();
setInterval(draw, 100);
setInterval(trim, 2000);
