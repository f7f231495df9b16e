// modelgate dashboard: one page, no build step. It reads the admin API
// (the same JSON the CLI uses), draws time series with the vendored uPlot
// and bars with plain HTML, and polls every few seconds. Every value from
// the API goes into the page as text (textContent), never as HTML.
'use strict';

(() => {
  const REFRESH_MS = 3000;
  const TOKEN_KEY = 'modelgate.adminToken';
  const PALETTE = ['#3757d6', '#f08c00', '#2f9e44', '#d6336c', '#7048e8', '#0c8599', '#e8590c', '#5c940d', '#c2255c', '#495057'];

  let token = sessionStorage.getItem(TOKEN_KEY);
  let view = 'overview';
  let tz = 'UTC';
  let timer = null;
  let busy = false;
  let refreshes = 0;
  const charts = new Map();
  const colors = new Map();
  const seenRequests = new Set();
  const filterOptions = { app: new Set(), model: new Set(), route: new Set() };
  // What the window and grouping toggles show.
  const windows = { routes: 'day', experiments: 'month', models: 'model' };

  class AuthError extends Error {}
  class ForbiddenError extends Error {}

  // === DOM helpers ===

  const $ = (sel, root = document) => root.querySelector(sel);

  // h('div', {class: 'x', 'data-k': 'y', text: 'z'}, child, ...)
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function dot(name) {
    const d = h('i', { class: 'dot' });
    d.style.background = colorOf(name);
    return d;
  }

  function colorOf(name) {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  }

  // === formatting ===

  function usd(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    const a = Math.abs(v);
    if (a === 0) return '$0.00';
    if (a >= 100) return '$' + Math.round(v).toLocaleString('en-US');
    if (a >= 1) return '$' + v.toFixed(2);
    if (a >= 0.01) return '$' + v.toFixed(4);
    return '$' + v.toFixed(6);
  }

  function axisUsd(v) {
    if (v === 0) return '$0';
    const a = Math.abs(v);
    if (a >= 1) return '$' + v.toFixed(a >= 100 ? 0 : 2);
    const digits = Math.min(8, Math.max(2, 1 - Math.floor(Math.log10(a))));
    return '$' + v.toFixed(digits);
  }

  // 1.2k, 3.4M: axis labels.
  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + 'k';
    return String(Math.round(v));
  }

  function int(v) {
    return v === null || v === undefined ? '–' : Math.round(v).toLocaleString('en-US');
  }

  function pct(v, digits = 1) {
    return v === null || v === undefined ? '–' : (v * 100).toFixed(digits) + '%';
  }

  function ms(v) {
    if (v === null || v === undefined) return '–';
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 1 : 2) + ' s';
    if (v >= 100) return Math.round(v) + ' ms';
    if (v >= 10) return v.toFixed(1) + ' ms';
    return v.toFixed(2) + ' ms';
  }

  function fmt(opts) {
    try {
      return new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: tz });
    } catch (_) {
      return new Intl.DateTimeFormat('en-GB', opts);
    }
  }

  function clock(ts) {
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return String(ts);
    const day = fmt({ year: 'numeric', month: '2-digit', day: '2-digit' });
    const sameDay = day.format(d) === day.format(new Date());
    const f = sameDay ? fmt({ hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false })
      : fmt({ day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hour12: false });
    return f.format(d);
  }

  function when(ts) {
    const d = new Date(ts);
    return fmt({ weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hour12: false, timeZoneName: 'short' }).format(d);
  }

  function inWords(msLeft) {
    if (msLeft <= 0) return 'now';
    const m = Math.round(msLeft / 60000);
    if (m < 60) return m + ' min';
    const hrs = Math.floor(m / 60);
    if (hrs < 48) return hrs + ' h ' + (m % 60) + ' min';
    return Math.round(hrs / 24) + ' days';
  }

  // === API ===

  async function api(path, tok = token) {
    const headers = { Accept: 'application/json' };
    if (tok) headers.Authorization = 'Bearer ' + tok;
    let r;
    try {
      r = await fetch(path, { headers, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    } catch (e) {
      throw new Error('modelgate does not answer (' + e.message + ')');
    }
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    const msg = body && body.error ? body.error : r.status + ' ' + r.statusText;
    if (r.status === 401) throw new AuthError(msg);
    if (r.status === 403) throw new ForbiddenError(msg);
    // /readyz answers 503 with its JSON when not ready.
    if (!r.ok && !(path === '/readyz' && body)) throw new Error(path + ': ' + msg);
    return body;
  }

  // === charts (uPlot) ===

  function axisSize(self, values, axisIdx, cycleNum) {
    const axis = self.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((acc, v) => (String(v).length > acc.length ? String(v) : acc), '');
    if (longest) {
      self.ctx.font = axis.font[0];
      size += self.ctx.measureText(longest).width / (window.devicePixelRatio || 1);
    }
    return Math.ceil(size) + 4;
  }

  // A stacked time chart: `layers` [{label, color, values}] bottom first.
  // Drawn top layer first, each filled to zero, so the ones below cover
  // the lower part: a stack without bands. The legend shows each layer's
  // own value, not the running sum.
  function stackedChart(key, el, t, layers, o) {
    const nonEmpty = layers.filter((l) => l.values.some((v) => v > 0));
    if (!t.length || !nonEmpty.length) {
      dropChart(key);
      el.replaceChildren(h('div', { class: 'empty', text: o.empty }));
      return;
    }
    const sums = [];
    let run = t.map(() => 0);
    for (const l of nonEmpty) {
      run = run.map((v, i) => v + (l.values[i] || 0));
      sums.push(run);
    }
    const order = nonEmpty.map((_, i) => i).reverse();
    const data = [t, ...order.map((i) => sums[i])];
    const raw = [t, ...order.map((i) => nonEmpty[i].values)];
    const bars = o.bars;
    const series = [{ label: o.xLabel || 'Time', value: (u, v) => bucketLabel(v, o.bars) }].concat(order.map((i, k) => ({
      label: nonEmpty[i].label,
      stroke: nonEmpty[i].color,
      fill: nonEmpty[i].color + (bars ? 'ee' : 'cc'),
      width: bars ? 0 : 1,
      points: { show: false },
      paths: bars ? uPlot.paths.bars({ size: [0.7, 48], align: 0 }) : undefined,
      value: (u, v, si, di) => (di == null ? '–' : o.fmt(raw[k + 1][di])),
    })));
    drawChart(key, el, data, series, o);
  }

  // Plain lines: `lines` [{label, color, values, dash}].
  function lineChart(key, el, t, lines, o) {
    if (!t.length || !lines.some((l) => l.values.some((v) => v !== null && v > 0))) {
      dropChart(key);
      el.replaceChildren(h('div', { class: 'empty', text: o.empty }));
      return;
    }
    const series = [{ label: 'Time', value: (u, v) => bucketLabel(v, false) }].concat(lines.map((l) => ({
      label: l.label,
      stroke: l.color,
      width: 2,
      dash: l.dash,
      spanGaps: false,
      points: { show: true, size: 4 },
      value: (u, v) => (v == null ? '–' : o.fmt(v)),
    })));
    drawChart(key, el, [t, ...lines.map((l) => l.values)], series, o);
  }

  function drawChart(key, el, data, series, o) {
    const width = Math.max(280, Math.floor(el.getBoundingClientRect().width));
    const sig = series.map((s) => s.label).join('|') + '|' + width + '|' + tz;
    const have = charts.get(key);
    if (have && have.sig === sig && have.el === el && el.contains(have.u.root)) {
      have.u.setData(data);
      showLatest(have.u);
      return;
    }
    dropChart(key);
    el.replaceChildren();
    const step = data[0].length > 1 ? data[0][1] - data[0][0] : 3600;
    const opts = {
      width,
      height: o.height || 220,
      tzDate: (ts) => { try { return uPlot.tzDate(new Date(ts * 1e3), tz); } catch (_) { return new Date(ts * 1e3); } },
      scales: {
        x: { time: true, range: (u, min, max) => (o.bars ? [min - step / 2, max + step / 2] : [min, max]) },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.12 : 1] },
      },
      axes: [
        { stroke: '#667085', grid: { stroke: '#eef0f3', width: 1 }, ticks: { stroke: '#e3e6eb', width: 1 }, space: o.xSpace || 60, values: (u, splits, ai, space, incr) => splits.map((t) => timeTick(t, incr)) },
        { stroke: '#667085', grid: { stroke: '#eef0f3', width: 1 }, ticks: { stroke: '#e3e6eb', width: 1 }, label: o.yLabel, labelSize: 16, labelFont: '12px system-ui, sans-serif', size: axisSize, space: 28, values: (u, vals) => vals.map(o.axis || o.fmt) },
      ],
      series,
      legend: { live: true },
      cursor: { points: { size: 6 }, drag: { x: false, y: false } },
      // (After the first draw: earlier, uPlot would reset the legend.)
      hooks: { ready: [showLatest] },
    };
    const u = new uPlot(opts, data, el);
    charts.set(key, { u, sig, el });
  }

  // The legend shows the latest bucket until the pointer is on the chart.
  function showLatest(u) {
    const n = u.data[0].length;
    if (n) u.setLegend({ idx: n - 1 });
  }

  // A bucket in the legend: its day, or its day and hour.
  function bucketLabel(t, day) {
    if (t == null) return '–';
    const d = new Date(t * 1000);
    return day ? fmt({ weekday: 'short', day: 'numeric', month: 'short' }).format(d)
      : fmt({ day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hour12: false }).format(d);
  }

  // Hours as 24-hour times, midnight and whole days as dates, in the
  // config's time zone.
  function timeTick(t, incr) {
    const d = new Date(t * 1000);
    const hm = fmt({ hour: '2-digit', minute: '2-digit', hour12: false }).format(d);
    if (incr >= 86400 || hm === '00:00') return fmt({ day: 'numeric', month: 'short' }).format(d);
    return hm;
  }

  function dropChart(key) {
    const have = charts.get(key);
    if (have) {
      have.u.destroy();
      charts.delete(key);
    }
  }

  // === small pieces ===

  function kpi(label, value, k, note, noteK, cls) {
    return h('div', { class: 'card kpi' },
      h('div', { class: 'label', text: label }),
      h('div', { class: 'value ' + (cls || ''), 'data-k': k, text: value }),
      note !== undefined ? h('div', { class: 'note', 'data-k': noteK, text: note }) : null);
  }

  // Horizontal bars scaled to the largest value (or `scale`, when the
  // values may all be 0); `color` a colour or a function of the label.
  function hbars(rows, fmtVal, color, scale) {
    const max = Math.max(scale || 0, ...rows.map((r) => r.value));
    if (!rows.length || max <= 0) return h('div', { class: 'muted small', text: 'Nothing yet' });
    const grid = h('div', { class: 'hbars' });
    for (const r of rows) {
      const fill = h('span', { 'data-value': r.value });
      fill.style.width = (r.value / max * 100).toFixed(2) + '%';
      if (color) fill.style.background = typeof color === 'function' ? color(r.label) : color;
      grid.append(h('div', { class: 'lbl', title: r.label, text: r.label }), h('div', { class: 'bar' }, fill), h('div', { class: 'val', text: fmtVal(r.value) }));
    }
    return grid;
  }

  // p50 and p95 per row, as two thin bars on one scale.
  function latencyBars(rows) {
    const max = Math.max(0, ...rows.map((r) => r.p95 || 0));
    if (!rows.length || max <= 0) return h('div', { class: 'muted small', text: 'Nothing answered since start today' });
    const grid = h('div', { class: 'hbars' });
    for (const r of rows) {
      const bar = h('div', { class: 'bar pair' });
      for (const [v, c] of [[r.p50, '#3757d6'], [r.p95, '#f08c00']]) {
        const fill = h('span');
        fill.style.width = ((v || 0) / max * 100).toFixed(2) + '%';
        fill.style.background = c;
        bar.append(fill);
      }
      grid.append(h('div', { class: 'lbl', title: r.label, text: r.label }), bar, h('div', { class: 'val', text: ms(r.p50) + ' · ' + ms(r.p95) }));
    }
    return grid;
  }

  function share(title, parts, fmtVal) {
    const total = parts.reduce((a, p) => a + p.value, 0);
    const block = h('div', { class: 'share-block' }, h('div', { class: 't', text: title }));
    if (total <= 0) {
      block.append(h('div', { class: 'muted small', text: 'None yet' }));
      return block;
    }
    const bar = h('div', { class: 'share' });
    const legend = h('div', { class: 'share-legend' });
    for (const p of parts.filter((p) => p.value > 0)) {
      const seg = h('span', { title: p.label + ': ' + fmtVal(p.value) + ' (' + pct(p.value / total) + ')' });
      seg.style.width = (p.value / total * 100).toFixed(3) + '%';
      seg.style.background = colorOf(p.label);
      bar.append(seg);
      const dot = h('i');
      dot.style.background = colorOf(p.label);
      legend.append(h('span', {}, dot, p.label + ' ' + pct(p.value / total, 0)));
    }
    block.append(bar, legend);
    return block;
  }

  function windowToggle(which) {
    const wrap = h('span', { class: 'sub' });
    for (const [w, label] of [['day', 'Today'], ['month', 'This month']]) {
      const b = h('button', { type: 'button', class: 'linkish', 'data-window': w, text: label, 'aria-pressed': windows[which] === w ? 'true' : 'false' });
      b.addEventListener('click', () => { windows[which] = w; refresh(); });
      wrap.append(b);
    }
    return wrap;
  }

  function statusPill(r) {
    const cls = 's' + Math.floor(r.status / 100);
    const text = r.error && r.status < 400 ? r.status + ' · ' + r.error : String(r.status);
    return h('span', { class: 'pill ' + (r.error && r.status < 400 ? 's4' : cls), title: r.error || '', text });
  }

  // === views ===

  const VIEWS = {
    overview: {
      load: () => Promise.all([
        api('/admin/budgets'), api('/admin/usage?window=day'), api('/admin/usage?window=month'),
        api('/admin/traffic?window=day'), api('/admin/series?step=hour'), api('/admin/health'), api('/readyz'),
      ]),
      render: renderOverview,
    },
    budgets: {
      load: () => Promise.all([api('/admin/budgets'), api('/admin/requests?limit=1')]),
      render: renderBudgets,
    },
    models: {
      load: () => Promise.all([api('/admin/series?step=hour'), api('/admin/series?step=day'), api('/admin/traffic?window=day'), api('/admin/health')]),
      render: renderModels,
    },
    routes: {
      load: () => Promise.all([api('/admin/traffic?window=' + windows.routes)]),
      render: renderRoutes,
    },
    experiments: {
      load: () => Promise.all([api('/admin/experiments?window=' + windows.experiments)]),
      render: renderExperiments,
    },
    requests: {
      load: () => Promise.all([api('/admin/requests?' + requestQuery())]),
      render: renderRequests,
    },
  };

  function section(name) {
    return $('#view-' + name);
  }

  // Build a view's fixed frame once (chart containers must outlive a
  // refresh); `parts` names the containers the render fills.
  function frame(name, build) {
    const sec = section(name);
    if (!sec.firstChild) build(sec);
    return (k) => sec.querySelector('[data-part="' + k + '"]');
  }

  function alertsOf(budgets, usageDay, traffic, health, ready) {
    const out = [];
    for (const b of budgets.budgets || []) {
      if (b.state !== 'ok') out.push({ level: b.state === 'warn' ? 'warn' : 'bad', text: 'Budget ' + b.name + ': ' + b.detail });
    }
    if (budgets.store && budgets.store.available === false) out.push({ level: 'bad', text: 'Budget store unreachable: ' + (budgets.store.error || '') + (budgets.store.note ? ' (' + budgets.store.note + ')' : '') });
    if (budgets.store && budgets.store.ledger_error) out.push({ level: 'bad', text: 'Spend ledger damaged: ' + budgets.store.ledger_error });
    if (usageDay.spend_spike) out.push({ level: 'bad', text: 'Spend spike: the last hour\u2019s spend is well above the usual hour (spend_spike)' });
    for (const m of health.models || []) {
      if (m.state === 'open') out.push({ level: 'bad', text: 'Circuit open: ' + m.model + ' on ' + m.provider + (m.last_error ? ' (' + m.last_error + ')' : '') + (m.retry_in_ms ? ', next try in ' + Math.ceil(m.retry_in_ms / 1000) + ' s' : '') });
      else if (m.state === 'half_open') out.push({ level: 'warn', text: 'Circuit half-open: ' + m.model + ' on ' + m.provider + ' is being probed' });
    }
    for (const p of health.providers || []) {
      if (p.healthy === false) out.push({ level: 'bad', text: 'Provider ' + p.provider + ' fails its health check' + (p.error ? ': ' + p.error : '') });
    }
    for (const r of (ready && ready.unservable_routes) || []) out.push({ level: 'bad', text: 'Route ' + r + ' cannot be served now: every one of its models is skipped' });
    const t = traffic.total;
    if (t && t.observed >= 20 && t.error_rate > 0.05) out.push({ level: 'warn', text: 'Error rate today is ' + pct(t.error_rate) + ' (' + int(t.errors) + ' of ' + int(t.observed) + ' answered)' });
    return out;
  }

  function renderOverview([budgets, usageDay, usageMonth, traffic, series, health, ready]) {
    tz = traffic.timezone || tz;
    const part = frame('overview', (sec) => {
      sec.append(
        h('h2', { text: 'Overview' }),
        h('div', { class: 'grid kpis', 'data-part': 'kpis' }),
        h('div', { class: 'grid two' },
          h('div', { class: 'card' }, h('h3', { text: 'Active alerts' }), h('ul', { class: 'alerts', 'data-part': 'alerts' })),
          h('div', { class: 'card' }, h('h3', {}, 'Spend by model today'), h('div', { 'data-part': 'top' }))),
        h('div', { class: 'grid two' },
          h('div', { class: 'card' }, h('h3', {}, 'Cost per hour', h('span', { class: 'sub', text: 'last 24 h, by model' })), h('div', { class: 'chart', 'data-part': 'cost' })),
          h('div', { class: 'card' }, h('h3', {}, 'Requests per hour', h('span', { class: 'sub', text: 'last 24 h' })), h('div', { class: 'chart', 'data-part': 'reqs' }))));
    });
    const d = usageDay.total;
    const m = usageMonth.total;
    const t = traffic.total;
    part('kpis').replaceChildren(
      kpi('Spend today', usd(d.cost_usd), 'spend-day', d.requested_cost_usd > 0 ? 'saved ' + d.savings_pct.toFixed(1) + '% today' : 'nothing saved yet', 'savings-day-pct'),
      kpi('Spend this month', usd(m.cost_usd), 'spend-month', int(m.requests) + ' charged requests', 'requests-month'),
      kpi('Saved this month', m.requested_cost_usd > 0 ? m.savings_pct.toFixed(1) + '%' : '–', 'savings-month-pct', usd(m.savings_usd) + ' vs requested', 'savings-month-usd', m.savings_usd > 0 ? 'good' : ''),
      kpi('Requests today', int(t.requests), 'requests-day', int(t.errors) + ' errors', 'errors-day'),
      kpi('Error rate today', pct(t.error_rate), 'error-rate-day', 'of ' + int(t.observed) + ' answered', null, t.error_rate > 0.05 ? 'bad' : ''),
      kpi('Latency today', ms(t.p50_ms), 'p50-day', 'p50 · p95 ' + ms(t.p95_ms), 'p95-day'));
    const alerts = alertsOf(budgets, usageDay, traffic, health, ready);
    part('alerts').replaceChildren(...(alerts.length
      ? alerts.map((a) => h('li', { class: a.level, text: a.text }))
      : [h('li', { class: 'none', text: 'No active alerts: budgets ok, circuits closed, providers healthy' })]));
    const byModel = Object.entries(usageDay.by_model || {}).map(([k, v]) => ({ label: k, value: v.cost_usd })).sort((a, b) => b.value - a.value).slice(0, 8);
    part('top').replaceChildren(hbars(byModel, usd, colorOf));
    const layers = series.models.slice().sort((a, b) => sum(b.cost_usd) - sum(a.cost_usd))
      .map((s) => ({ label: s.model, color: colorOf(s.model), values: s.cost_usd }));
    stackedChart('ov-cost', part('cost'), series.t, layers, { fmt: usd, axis: axisUsd, yLabel: 'USD per hour', empty: 'No spend in the last 24 hours' });
    lineChart('ov-reqs', part('reqs'), series.t, [
      { label: 'requests', color: '#3757d6', values: series.total.requests },
      { label: 'errors', color: '#d63939', values: series.total.errors },
    ], { fmt: int, yLabel: 'requests per hour', empty: 'No requests in the last 24 hours' });
  }

  function sum(a) {
    return a.reduce((x, y) => x + (y || 0), 0);
  }

  function limitRow(b, kind) {
    const spec = {
      usd: { limit: b.limit_usd, spent: b.spent_usd, reserved: b.reserved_usd, f: usd, name: 'USD' },
      tokens: { limit: b.limit_tokens, spent: b.spent_tokens, reserved: b.reserved_tokens, f: int, name: 'tokens' },
      requests: { limit: b.limit_requests, spent: b.requests, reserved: 0, f: int, name: 'requests' },
    }[kind];
    const frac = spec.limit > 0 ? spec.spent / spec.limit : 0;
    const resFrac = spec.limit > 0 ? spec.reserved / spec.limit : 0;
    const track = h('div', { class: 'track', 'data-k': 'budget-track', 'data-limit': spec.limit, 'data-spent': spec.spent });
    const fill = h('div', { class: 'fill state-' + b.state, 'data-k': 'budget-fill', 'data-fraction': frac });
    fill.style.width = Math.min(100, frac * 100).toFixed(3) + '%';
    track.append(fill);
    if (resFrac > 0 && frac < 1) {
      const res = h('div', { class: 'reserved', title: 'reserved by requests in flight: ' + spec.f(spec.reserved) });
      res.style.left = Math.min(100, frac * 100).toFixed(3) + '%';
      res.style.width = Math.max(0.4, Math.min(100 - frac * 100, resFrac * 100)).toFixed(3) + '%';
      track.append(res);
    }
    const wl = h('div', { class: 'warnline', title: 'warn at ' + Math.round(b.warn_at * 100) + '%' });
    wl.style.left = 'calc(' + (b.warn_at * 100).toFixed(2) + '% - 1px)';
    track.append(wl);
    const left = Math.max(0, spec.limit - spec.spent - spec.reserved);
    return h('div', { class: 'limit-row', 'data-limit-kind': kind },
      h('div', { class: 'caption' },
        h('span', {}, h('b', { 'data-k': 'budget-spent', text: spec.f(spec.spent) }), ' spent of ', h('span', { 'data-k': 'budget-limit', text: spec.f(spec.limit) }),
          ' ', h('span', { class: 'muted', 'data-k': 'budget-pct', text: '(' + (frac * 100).toFixed(1) + '%)' })),
        h('span', { class: 'muted' }, spec.f(spec.reserved) + ' reserved · ' + spec.f(left) + ' left')),
      track);
  }

  function renderBudgets([budgets]) {
    const part = frame('budgets', (sec) => {
      sec.append(h('h2', {}, 'Budgets', h('span', { class: 'sub', 'data-part': 'store' })),
        h('div', { class: 'legend-row' }, h('span', {}, h('i', { class: 'spent' }), 'spent'), h('span', {}, h('i', { class: 'res' }), 'reserved by requests in flight'), h('span', {}, h('i', { class: 'wl' }), 'warn_at line')),
        h('div', { 'data-part': 'list' }));
    });
    const s = budgets.store || {};
    part('store').textContent = 'store: ' + s.kind + (s.available === false ? ' (unreachable: figures are this process\u2019s view)' : '');
    const list = budgets.budgets || [];
    if (!list.length) {
      part('list').replaceChildren(h('div', { class: 'card empty', text: 'No budgets configured. Add a budgets: section to the config (see the README\u2019s Budgets).' }));
      return;
    }
    const now = Date.now();
    part('list').replaceChildren(...list.map((b) => {
      const kinds = ['usd', 'tokens', 'requests'].filter((k) => ({ usd: b.limit_usd, tokens: b.limit_tokens, requests: b.limit_requests })[k] != null);
      const stateWords = { ok: 'OK', warn: 'Warning', at_limit: 'At limit', exceeded: 'Exceeded' }[b.state] || b.state;
      return h('div', { class: 'card budget', 'data-budget': b.name },
        h('div', { class: 'head' },
          h('span', { class: 'name', text: b.name }),
          h('span', { class: 'pill ' + b.state, 'data-k': 'budget-state', text: stateWords }),
          h('span', { class: 'meta', text: b.scope + ' · per ' + b.window + ' · on exceed: ' + b.on_exceed + (b.downgrade_to ? ' → ' + b.downgrade_to : '') + ' · warn at ' + Math.round(b.warn_at * 100) + '%' })),
        kinds.map((k) => limitRow(b, k)),
        h('div', { class: 'detail', 'data-k': 'budget-detail', text: b.detail }),
        h('div', { class: 'resets', text: 'Resets in ' + inWords(new Date(b.resets_at).getTime() - now) + ' (' + when(b.resets_at) + ')' }));
    }));
  }

  function renderModels([hours, days, traffic, health]) {
    tz = traffic.timezone || tz;
    const part = frame('models', (sec) => {
      sec.append(h('h2', { 'data-part': 'title' }),
        h('div', { class: 'grid two' },
          h('div', { class: 'card' }, h('h3', {}, h('span', { 'data-part': 'by1', text: 'Requests per hour by model' }), h('span', { class: 'sub', text: 'last 24 h' })), h('div', { class: 'chart', 'data-part': 'req-h' })),
          h('div', { class: 'card' }, h('h3', {}, h('span', { 'data-part': 'by2', text: 'Cost per hour by model' }), h('span', { class: 'sub', text: 'last 24 h' })), h('div', { class: 'chart', 'data-part': 'cost-h' }))),
        h('div', { class: 'grid two' },
          h('div', { class: 'card' }, h('h3', {}, h('span', { 'data-part': 'by3', text: 'Cost per day by model' }), h('span', { class: 'sub', text: 'last 30 days' })), h('div', { class: 'chart', 'data-part': 'cost-d' })),
          h('div', { class: 'card' }, h('h3', {}, 'Tokens per hour', h('span', { class: 'sub', text: 'last 24 h, all models' })), h('div', { class: 'chart', 'data-part': 'tok-h' }))),
        h('div', { class: 'grid two' },
          h('div', { class: 'card' }, h('h3', {}, 'Share today'), h('div', { 'data-part': 'share' })),
          h('div', { class: 'card' }, h('h3', {}, 'Latency today', h('span', { class: 'sub', text: 'whole request, answered since start' })),
            h('div', { class: 'legend-row tight' }, h('span', {}, h('i', { class: 'p50' }), 'p50'), h('span', {}, h('i', { class: 'p95' }), 'p95')),
            h('div', { 'data-part': 'latency' }))),
        h('div', { class: 'card' }, h('h3', {}, 'Models today', h('span', { class: 'sub', text: 'breaker state from the last tries' })), h('div', { class: 'wrap', 'data-part': 'table' })),
        h('div', { class: 'grid two' },
          h('div', { class: 'card' }, h('h3', {}, 'Fallbacks', h('span', { class: 'sub', text: 'since start' })), h('div', { 'data-part': 'fallbacks' })),
          h('div', { class: 'card' }, h('h3', {}, 'Provider health checks'), h('div', { 'data-part': 'providers' }))));
    });
    // Over time by model or by provider.
    const by = windows.models;
    const toggle = h('span', { class: 'sub' });
    for (const [w, label] of [['model', 'By model'], ['provider', 'By provider']]) {
      const b = h('button', { type: 'button', class: 'linkish', 'data-group': w, text: label, 'aria-pressed': by === w ? 'true' : 'false' });
      b.addEventListener('click', () => { windows.models = w; refresh(); });
      toggle.append(b);
    }
    part('title').replaceChildren('Models', toggle);
    part('by1').textContent = 'Requests per hour by ' + by;
    part('by2').textContent = 'Cost per hour by ' + by;
    part('by3').textContent = 'Cost per day by ' + by;
    const groups = (series) => (by === 'provider' ? series.providers.map((p) => ({ ...p, name: p.provider })) : series.models.map((m) => ({ ...m, name: m.model })));
    const layers = (series, key) => groups(series).sort((a, b) => sum(b[key]) - sum(a[key])).map((g) => ({ label: g.name, color: colorOf(g.name), values: g[key] }));
    stackedChart('m-req-h', part('req-h'), hours.t, layers(hours, 'requests'), { fmt: int, yLabel: 'requests per hour', empty: 'No requests in the last 24 hours' });
    stackedChart('m-cost-h', part('cost-h'), hours.t, layers(hours, 'cost_usd'), { fmt: usd, axis: axisUsd, yLabel: 'USD per hour', empty: 'No spend in the last 24 hours' });
    stackedChart('m-cost-d', part('cost-d'), days.t, layers(days, 'cost_usd'),
      { fmt: usd, axis: axisUsd, yLabel: 'USD per day', bars: true, xLabel: 'Day', xSpace: 50, empty: 'No spend in the last 30 days' });
    const tokens = (k) => hours.t.map((_, i) => hours.models.reduce((a, m) => a + m[k][i], 0));
    lineChart('m-tok-h', part('tok-h'), hours.t, [
      { label: 'input', color: '#0c8599', values: tokens('input_tokens') },
      { label: 'output', color: '#7048e8', values: tokens('output_tokens') },
    ], { fmt: int, axis: compact, yLabel: 'tokens per hour', empty: 'No tokens in the last 24 hours' });

    const models = traffic.models || [];
    const providers = {};
    for (const m of models) {
      const p = providers[m.provider] || (providers[m.provider] = { requests: 0, cost: 0 });
      p.requests += m.requests;
      p.cost += m.cost_usd;
    }
    part('share').replaceChildren(
      share('Requests by model', models.map((m) => ({ label: m.model, value: m.requests })), int),
      share('Cost by model', models.map((m) => ({ label: m.model, value: m.cost_usd })), usd),
      share('Requests by provider', Object.entries(providers).map(([k, v]) => ({ label: k, value: v.requests })), int),
      share('Cost by provider', Object.entries(providers).map(([k, v]) => ({ label: k, value: v.cost })), usd));
    part('latency').replaceChildren(latencyBars(models.filter((m) => m.observed).map((m) => ({ label: m.model, p50: m.p50_ms, p95: m.p95_ms }))));

    const breakers = {};
    for (const b of health.models || []) breakers[b.model + '\u001f' + b.provider] = b;
    const rows = models.map((m) => {
      const b = breakers[m.model + '\u001f' + m.provider];
      delete breakers[m.model + '\u001f' + m.provider];
      return { m, b };
    }).concat(Object.values(breakers).map((b) => ({ m: { model: b.model, provider: b.provider }, b })));
    if (!rows.length) {
      part('table').replaceChildren(h('div', { class: 'empty', text: 'No model has served a request today' }));
    } else {
      part('table').replaceChildren(h('table', {},
        h('thead', {}, h('tr', {}, ['Model', 'Provider', 'Requests', 'Errors', 'Error rate', 'p50', 'p95', 'Cost', 'Breaker', 'Recent tries', 'Last error'].map((c, i) => h('th', { class: i >= 2 && i <= 7 ? 'num' : '', text: c })))),
        h('tbody', {}, rows.map(({ m, b }) => h('tr', { 'data-model': m.model },
          h('td', {}, dot(m.model), m.model), h('td', { text: m.provider }),
          h('td', { class: 'num', text: int(m.requests) }), h('td', { class: 'num', text: int(m.errors) }), h('td', { class: 'num', text: pct(m.error_rate) }),
          h('td', { class: 'num', text: ms(m.p50_ms) }), h('td', { class: 'num', text: ms(m.p95_ms) }), h('td', { class: 'num', text: usd(m.cost_usd) }),
          h('td', {}, b ? h('span', { class: 'pill ' + b.state, text: b.state.replace('_', '-') + (b.state === 'open' && b.retry_in_ms ? ' · ' + Math.ceil(b.retry_in_ms / 1000) + ' s' : '') }) : h('span', { class: 'muted', text: 'not tried' })),
          h('td', { class: 'num', text: b ? b.recent_failures + ' failed of ' + b.recent_attempts : '–' }),
          h('td', { class: 'small', text: b && b.last_error ? b.last_error : '' }))))));
    }
    const fb = health.fallbacks || [];
    part('fallbacks').replaceChildren(fb.length
      ? h('table', {}, h('thead', {}, h('tr', {}, h('th', { text: 'From' }), h('th', { text: 'To' }), h('th', { text: 'Why' }), h('th', { class: 'num', text: 'Times' }))),
        h('tbody', {}, fb.map((f) => h('tr', {}, h('td', { text: f.from }), h('td', { text: f.to }), h('td', { text: f.reason }), h('td', { class: 'num', text: int(f.count) })))))
      : h('div', { class: 'empty', text: 'No fallbacks since start' }));
    const ps = health.providers || [];
    part('providers').replaceChildren(ps.length
      ? h('table', {}, h('tbody', {}, ps.map((p) => h('tr', {},
        h('td', { text: p.provider }),
        h('td', {}, h('span', { class: 'pill ' + (p.healthy === false ? 'open' : p.healthy ? 'closed' : ''), text: p.healthy === null ? 'not checked yet' : p.healthy ? 'healthy' : 'failing' })),
        h('td', { class: 'small muted', text: (p.error || '') + (p.checked_ms_ago != null ? ' checked ' + Math.round(p.checked_ms_ago / 1000) + ' s ago' : '') })))))
      : h('div', { class: 'empty', text: 'No provider has a health_check' }));
  }

  function complexityChart(counts) {
    const max = Math.max(0, ...counts);
    if (max <= 0) return h('div', { class: 'muted small', text: 'No model calls scored yet' });
    const cols = h('div', { class: 'cols' }, counts.map((n) => {
      const b = h('div', { class: 'b', title: n + ' requests' });
      b.style.height = 'calc((100% - 14px) * ' + (n / max).toFixed(4) + ')';
      return h('div', { class: 'col' }, h('div', { class: 'n', text: n > 0 ? int(n) : '' }), b);
    }));
    return h('div', {}, cols, h('div', { class: 'cols-x' }, counts.map((_, i) => h('span', { text: i }))), h('div', { class: 'axis-title', text: 'complexity score (0–10) · requests' }));
  }

  function renderRoutes([traffic]) {
    tz = traffic.timezone || tz;
    const part = frame('routes', (sec) => {
      sec.append(h('h2', { 'data-part': 'title' }), h('div', { class: 'grid two', 'data-part': 'list' }));
    });
    part('title').replaceChildren('Routes', windowToggle('routes'));
    const routes = traffic.routes || [];
    part('list').replaceChildren(...routes.map((r) => {
      const kindWords = { model: 'fixed model', tiers: 'complexity tiers', select: 'select', split: 'A/B split', none: 'no route matched', removed: 'no longer in the config' }[r.kind] || r.kind;
      const card = h('div', { class: 'card', 'data-route': r.route },
        h('div', { class: 'route-head' }, h('span', { class: 'name', text: r.route }), h('span', { class: 'pill', text: kindWords }), r.shadow ? h('span', { class: 'pill warn', text: 'shadow' }) : null),
        h('div', { class: 'stats-line' }, h('b', { 'data-k': 'route-requests', text: int(r.requests) }), ' requests · ', h('b', { text: pct(r.error_rate) }), ' errors · p50 ', h('b', { text: ms(r.p50_ms) }), ' · p95 ', h('b', { text: ms(r.p95_ms) }), r.downgraded ? ' · ' + int(r.downgraded) + ' downgraded by a budget' : ''),
        h('div', { class: 'section-label', text: r.shadow ? 'Served by (forwarded as asked)' : 'Decisions: served by' }),
        hbars(r.models.map((m) => ({ label: m.model, value: m.requests })), int, colorOf));
      if (r.tiers) {
        card.append(h('div', { class: 'section-label', text: 'Tiers hit (by complexity score, answered since start)' }),
          hbars(r.tiers.map((t) => ({ label: '≤ ' + t.max_complexity + ' → ' + t.model, value: t.requests })), int, '#7048e8'));
      }
      if (r.kind !== 'none') card.append(h('div', { class: 'section-label', text: 'Complexity distribution (answered since start)' }), complexityChart(r.complexity));
      if (r.shadow || r.shadow_decisions.length) {
        card.append(h('div', { class: 'section-label', text: 'Shadow decisions: would have chosen → served' }),
          r.shadow_decisions.length
            ? h('table', {}, h('tbody', {}, r.shadow_decisions.map((s) => h('tr', {}, h('td', {}, s.would, h('span', { class: 'arrow', text: '→' }), s.served), h('td', { class: 'num', text: int(s.requests) })))))
            : h('div', { class: 'muted small', text: 'No shadow decisions yet' }));
      }
      return card;
    }));
    if (!routes.length) part('list').replaceChildren(h('div', { class: 'card empty', text: 'No routes configured and no traffic yet' }));
  }

  function renderExperiments([exp]) {
    const part = frame('experiments', (sec) => {
      sec.append(h('h2', { 'data-part': 'title' }), h('div', { 'data-part': 'list' }));
    });
    part('title').replaceChildren('Experiments', windowToggle('experiments'));
    const list = exp.experiments || [];
    if (!list.length) {
      part('list').replaceChildren(h('div', { class: 'card empty', text: 'No split routes. A route with split: [...] arms shows here with cost, errors, latency and ratings per arm.' }));
      return;
    }
    part('list').replaceChildren(...list.map((e) => {
      const arms = e.arms;
      return h('div', { class: 'card', 'data-experiment': e.route },
        h('div', { class: 'route-head' }, h('span', { class: 'name', text: e.route }), h('span', { class: 'pill', text: 'A/B split' }), e.in_config ? null : h('span', { class: 'pill warn', text: 'no longer in the config' })),
        h('div', { class: 'verdict' + (e.cheaper_at_equal_error_rate === false ? ' risky' : ''), 'data-k': 'verdict', text: e.verdict }),
        h('div', { class: 'wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Arm', 'Model', 'Weight', 'Requests', 'Cost', 'Cost / request', 'Error rate', 'p50', 'p95', 'Quality', 'Ratings'].map((c, i) => h('th', { class: i >= 2 ? 'num' : '', text: c })))),
          h('tbody', {}, arms.map((a) => h('tr', { 'data-arm': a.arm },
            h('td', {}, h('b', { text: a.arm }), a.arm === e.cheapest ? h('span', { class: 'pill ok tag', text: 'cheapest' }) : null),
            h('td', { text: a.model || '–' }),
            h('td', { class: 'num', text: a.weight_pct == null ? '–' : a.weight_pct + '%' }),
            h('td', { class: 'num', 'data-k': 'arm-requests', text: int(a.requests) }),
            h('td', { class: 'num', 'data-k': 'arm-cost', text: usd(a.cost_usd) }),
            h('td', { class: 'num', 'data-k': 'arm-cpr', text: usd(a.cost_per_request_usd) }),
            h('td', { class: 'num', text: pct(a.error_rate) + (a.observed ? ' of ' + int(a.observed) : '') }),
            h('td', { class: 'num', text: ms(a.p50_ms) }),
            h('td', { class: 'num', text: ms(a.p95_ms) }),
            h('td', { class: 'num', 'data-k': 'arm-quality', text: a.feedback.mean_score == null ? '–' : a.feedback.mean_score.toFixed(2) }),
            h('td', { class: 'num', 'data-k': 'arm-ratings', text: a.feedback.ratings ? int(a.feedback.ratings) + (a.feedback.up + a.feedback.down ? ' (' + a.feedback.up + ' up, ' + a.feedback.down + ' down)' : '') : 'none' })))))),
        h('div', { class: 'grid three' },
          h('div', {}, h('div', { class: 'section-label', text: 'Cost per request' }), hbars(arms.map((a) => ({ label: a.arm, value: a.cost_per_request_usd || 0 })), usd, colorOf)),
          h('div', {}, h('div', { class: 'section-label', text: 'Error rate (answered since start)' }), arms.some((a) => a.observed) ? hbars(arms.map((a) => ({ label: a.arm, value: a.error_rate || 0 })), (v) => pct(v), '#d63939', 0.05) : h('div', { class: 'muted small', text: 'Nothing answered since start' })),
          h('div', {}, h('div', { class: 'section-label', text: 'Quality (mean rating, 0–1)' }), arms.some((a) => a.feedback.ratings) ? hbars(arms.map((a) => ({ label: a.arm, value: a.feedback.mean_score || 0 })), (v) => v.toFixed(2), '#2f9e44') : h('div', { class: 'muted small', text: 'No ratings yet: apps rate answers with POST /admin/feedback' }))),
        h('div', { class: 'muted small foot', text: 'Requests and cost: the ledger (' + (exp.window === 'day' ? 'today' : 'this month') + '). Errors and latency: answered since ' + clock(exp.since) + '.' }));
    }));
  }

  function requestQuery() {
    const q = new URLSearchParams();
    q.set('limit', '200');
    const sec = section('requests');
    for (const k of ['app', 'model', 'route', 'status']) {
      const el = sec && sec.querySelector('select[name="' + k + '"]');
      if (el && el.value) q.set(k, el.value);
    }
    return q.toString();
  }

  function renderRequests([data]) {
    const part = frame('requests', (sec) => {
      const sel = (name, label) => {
        const s = h('select', { name, 'aria-label': label }, h('option', { value: '', text: 'all' }));
        if (name === 'status') for (const [v, t] of [['2xx', '2xx ok'], ['4xx', '4xx'], ['5xx', '5xx'], ['errors', 'errors']]) s.append(h('option', { value: v, text: t }));
        s.addEventListener('change', () => refresh());
        return h('label', {}, label, s);
      };
      const clear = h('button', { type: 'button', text: 'Clear filters' });
      clear.addEventListener('click', () => { sec.querySelectorAll('select').forEach((s) => { s.value = ''; }); refresh(); });
      sec.append(h('h2', {}, 'Requests', h('span', { class: 'sub', text: 'metadata only, never prompt text' })),
        h('div', { class: 'card' },
          h('div', { class: 'filters' }, sel('app', 'App'), sel('model', 'Model'), sel('route', 'Route'), sel('status', 'Status'), clear, h('span', { class: 'count', 'data-part': 'count' })),
          h('div', { class: 'wrap', 'data-part': 'table' })));
    });
    const rows = data.requests || [];
    for (const r of rows) {
      if (r.app) filterOptions.app.add(r.app);
      if (r.model) filterOptions.model.add(r.model);
      if (r.requested_model) filterOptions.model.add(r.requested_model);
      if (r.route) filterOptions.route.add(r.route);
    }
    const sec = section('requests');
    for (const k of ['app', 'model', 'route']) {
      const s = sec.querySelector('select[name="' + k + '"]');
      const have = new Set([...s.options].map((o) => o.value));
      for (const v of [...filterOptions[k]].sort()) if (!have.has(v)) s.append(h('option', { value: v, text: v }));
    }
    part('count').textContent = int(rows.length) + ' shown · ' + int(data.kept) + ' kept of the last ' + int(data.size) + ' (dashboard.recent_requests) · ' + int(data.seen) + ' since start';
    if (!rows.length) {
      part('table').replaceChildren(h('div', { class: 'empty', text: data.kept ? 'No request matches the filters' : 'No requests yet' }));
      return;
    }
    const first = seenRequests.size === 0;
    const table = h('table', { id: 'requests-table' },
      h('thead', {}, h('tr', {}, ['Time', 'Id', 'App', 'Task', 'Requested → served', 'Route', 'Status', 'Tokens in / out', 'Cost', 'Latency', 'Tries'].map((c, i) => h('th', { class: i >= 7 ? 'num' : '', text: c })))),
      h('tbody', {}, rows.map((r) => {
        const fresh = !first && !seenRequests.has(r.request_id);
        seenRequests.add(r.request_id);
        const served = r.model || (r.provider ? 'unconfigured' : '–');
        return h('tr', { 'data-request-id': r.request_id, class: fresh ? 'fresh' : '' },
          h('td', { title: r.ts, text: clock(r.ts) }),
          h('td', { title: r.request_id }, h('code', { text: (r.request_id || '').slice(0, 8) })),
          h('td', { text: r.app }),
          h('td', { class: 'muted', text: r.task || '–' }),
          h('td', { class: 'model' }, r.requested_model || '–', r.requested_model !== served ? [h('span', { class: 'arrow', text: '→' }), served] : null),
          h('td', {}, r.route, r.arm ? h('span', { class: 'muted', text: ' / ' + r.arm }) : null),
          h('td', {}, statusPill(r)),
          h('td', { class: 'num', text: int(r.input_tokens + r.cached_input_tokens + r.cache_write_tokens) + ' / ' + int(r.output_tokens) + (r.usage_reported || !r.input_tokens ? '' : ' ~') }),
          h('td', { class: 'num', text: r.cost_usd == null ? '–' : usd(r.cost_usd) }),
          h('td', { class: 'num', text: ms(r.duration_ms) }),
          h('td', { class: 'num', text: int(r.attempts) }));
      })));
    part('table').replaceChildren(table);
  }

  // === the loop ===

  function showMain() {
    $('#login').hidden = true;
    $('#main').hidden = false;
    $('#problem').hidden = true;
    $('#signout').hidden = !token;
  }

  function clearData() {
    for (const key of [...charts.keys()]) dropChart(key);
    for (const name of Object.keys(VIEWS)) section(name).replaceChildren();
    seenRequests.clear();
    for (const s of Object.values(filterOptions)) s.clear();
  }

  function showLogin(message) {
    clearData();
    $('#main').hidden = true;
    $('#signout').hidden = true;
    $('#login').hidden = false;
    const m = /from ([A-Za-z_][A-Za-z0-9_]*)/.exec(message || '');
    if (m) $('#token-var').textContent = m[1];
    $('#login-error').textContent = token ? 'The saved token was not accepted: ' + message : '';
    $('#token').focus();
    setLive('locked', 'admin token needed');
  }

  function setLive(state, text) {
    const live = $('#live');
    live.className = 'live' + (state === 'ok' ? '' : ' ' + state);
    live.textContent = { ok: 'live', stale: 'retrying', locked: 'locked', down: 'offline' }[state];
    $('#updated').textContent = text || '';
  }

  async function refresh() {
    // Nothing to show until a token is given at the prompt.
    if (busy || (!$('#login').hidden && !token)) return;
    busy = true;
    const v = view;
    try {
      const data = await VIEWS[v].load();
      if (v !== view) return;
      showMain();
      VIEWS[v].render(data);
      refreshes += 1;
      section(v).dataset.rendered = String(refreshes);
      document.body.dataset.refreshes = String(refreshes);
      setLive('ok', 'updated ' + fmt({ hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }).format(new Date()));
    } catch (e) {
      if (e instanceof AuthError) {
        showLogin(e.message);
      } else if (e instanceof ForbiddenError) {
        clearData();
        $('#main').hidden = true;
        $('#problem').hidden = false;
        $('#problem').textContent = e.message;
        setLive('down', '');
      } else {
        setLive('stale', e.message);
        if ($('#main').hidden) {
          $('#problem').hidden = false;
          $('#problem').textContent = e.message;
        }
      }
    } finally {
      busy = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = setInterval(() => { if (!document.hidden && $('#login').hidden) refresh(); }, REFRESH_MS);
  }

  function showView() {
    const want = (location.hash || '#overview').slice(1);
    view = VIEWS[want] ? want : 'overview';
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === view);
    for (const name of Object.keys(VIEWS)) section(name).classList.toggle('active', name === view);
    document.title = 'modelgate · ' + view[0].toUpperCase() + view.slice(1);
  }

  function start() {
    showView();
    window.addEventListener('hashchange', () => { showView(); refresh(); });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
    let resizeTimer = null;
    window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => { if (!$('#main').hidden) refresh(); }, 150); });
    $('#login-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const input = $('#token');
      const given = input.value.trim();
      if (!given) {
        $('#login-error').textContent = 'Enter the admin token.';
        return;
      }
      try {
        await api('/admin/requests?limit=1', given);
      } catch (e) {
        $('#login-error').textContent = e instanceof AuthError ? 'That token was not accepted (' + e.message + ').' : e.message;
        return;
      }
      token = given;
      sessionStorage.setItem(TOKEN_KEY, given);
      input.value = '';
      $('#login-error').textContent = '';
      await refresh();
    });
    $('#signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      showLogin('');
    });
    schedule();
    refresh();
  }

  if (typeof uPlot === 'undefined') {
    document.addEventListener('DOMContentLoaded', () => { $('#problem').hidden = false; $('#problem').textContent = 'The chart library did not load.'; });
  }
  start();
})();
