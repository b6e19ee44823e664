// The leadscore console's script: sign-in, hash navigation between the panes (thresholds,
// model health, versions, drift, sales queue, one lead), calls to the leadscore-serve API
// with the signed-in key, and the charts drawn as inline SVG. Plain browser JavaScript, no
// external library, nothing loaded from outside the server (its CSP allows only 'self').
// Everything said about a model is in its task's words (WORDS: leads or customers).
'use strict';

// ---------- small helpers ----------
const $ = (id) => document.getElementById(id);
const SVGNS = 'http://www.w3.org/2000/svg';

// el('p', {class: 'x', text: 'hi'}, child...) builds an HTML element; svg() the same in SVG.
function build(ns, tag, attrs, children) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const el = (tag, attrs, ...children) => build(null, tag, attrs, children);
const svg = (tag, attrs, ...children) => build(SVGNS, tag, attrs, children);

// Numbers and dates in the reader's locale.
const nf = (opts) => new Intl.NumberFormat(undefined, opts);
const fmt = {
  pct(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return '–';
    return nf({ style: 'percent', maximumFractionDigits: x !== 0 && Math.abs(x) < 0.01 ? 2 : 1 }).format(x);
  },
  num(x, digits = 2) { return x === null || x === undefined ? '–' : nf({ maximumFractionDigits: digits }).format(x); },
  fixed(x, digits = 2) { return x === null || x === undefined ? '–' : nf({ minimumFractionDigits: digits, maximumFractionDigits: digits }).format(x); },
  perWeek(n, w = wordsOf()) { return `${nf({ maximumFractionDigits: n < 10 ? 1 : 0 }).format(n)} ${w.entities} a week`; },
  date(t) {
    if (!t) return '–';
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? String(t) : new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(d);
  },
  time(t) { return new Intl.DateTimeFormat(undefined, { timeStyle: 'short' }).format(t ? new Date(t) : new Date()); },
  words(s) { return String(s).replace(/_/g, ' '); },
};
const upperFirst = (s) => s.charAt(0).toUpperCase() + s.slice(1);

// The words a model's task is spoken of in, those of the training report and the CLI
// (training/src/words.rs): a propensity model's leads convert and go to sales when
// sales-ready; a churn model's customers churn and go to a retention team when at risk.
// API names (`sales_ready`, `leads_per_week`, `/v1/leads/top/...`) are not words shown.
const WORDS = {
  propensity: {
    entity: 'lead', entities: 'leads', open: 'open', closed: 'closed', outcome: 'conversion',
    convert: 'convert', converts: 'converts', positive: 'converted', negative: 'did not',
    converting: 'converting', notConverting: 'non-converting', positives: 'conversions',
    rate: 'conversion rate', flagged: 'sales-ready', flaggedBefore: 'sales-ready', forFlagged: 'for sales-ready',
    team: 'sales', capacity: 'leads a week your team can work', arrive: 'arrive', queue: 'sales queue',
    bestFirst: 'leads best-first', working: 'working the best-scored leads first',
  },
  churn: {
    entity: 'customer', entities: 'customers', open: 'current', closed: 'churned', outcome: 'churn',
    convert: 'churn', converts: 'churns', positive: 'churned', negative: 'stayed',
    converting: 'churning', notConverting: 'staying', positives: 'churned customers',
    rate: 'churn rate', flagged: 'at risk', flaggedBefore: 'at-risk', forFlagged: 'to flag customers at risk',
    team: 'the retention team', capacity: 'customers a week your retention team can contact', arrive: 'are scored', queue: 'retention queue',
    bestFirst: 'the customers most at risk first', working: 'contacting the customers most at risk first',
  },
};

// ---------- state and API ----------
const store = window.sessionStorage;
const state = { key: store.getItem('leadscore.key') || '', name: store.getItem('leadscore.name') || '', models: [], model: store.getItem('leadscore.model') || '' };

class ApiError extends Error {
  constructor(status, kind, message, field) { super(message); this.status = status; this.kind = kind; this.field = field; }
}

async function api(path, { method = 'GET', body, key = state.key } = {}) {
  const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.', null);
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.ok) return data;
  const err = (data && data.error) || {};
  let message = err.message || `The server answered ${res.status}.`;
  if (res.status === 401 && key === state.key && state.key) {
    signOut(`You were signed out: the server did not accept your key (${message}). Please sign in again.`);
  } else if (res.status === 403) {
    message = `This change needs an admin key. (${message})`;
  } else if (res.status === 404 && err.kind === 'not_found' && /no route/.test(message)) {
    message = `This server does not offer this yet (${message}).`;
  }
  throw new ApiError(res.status, err.kind || '', message, err.field || null);
}
const enc = encodeURIComponent;
const modelNamed = (name) => state.models.find((m) => m.name === name) || null;
const currentModel = () => modelNamed(state.model);
// The words of the model named `name` (the selected one unless told; a propensity model's
// when the server does not say).
function wordsOf(name = state.model) {
  const m = modelNamed(name);
  return WORDS[m && m.task] || WORDS.propensity;
}
// The page's fixed texts in the selected model's words (index.html has a propensity model's).
function applyWords() {
  const w = wordsOf();
  const texts = {
    'capacity-title': `${upperFirst(w.flagged)}: how many ${w.entities} go to ${w.team}`,
    'capacity-label': upperFirst(w.capacity),
    'capacity-precision-term': `Precision (share of flagged ${w.entities} that ${w.convert})`,
    'capacity-caught-term': `Share of all ${w.positives} caught`,
    'capacity-expected-term': `Expected ${w.positives} a week`,
    'grade-mode-capacity-text': `${upperFirst(w.entities)} a week in each grade`,
    'preview-per-week': `${upperFirst(w.entities)} a week`,
    'preview-rate': upperFirst(w.rate),
    'preview-expected': `Expected ${w.positives} a week`,
    'nav-queue': upperFirst(w.queue),
    'queue-title': upperFirst(w.queue),
    'lead-back': `Back to the ${w.queue}`,
    'lead-title': upperFirst(w.entity),
  };
  for (const [id, text] of Object.entries(texts)) $(id).textContent = text;
}

// A message in a container: errors are role="alert", the rest role="status".
function say(container, text, kind = 'error') {
  const box = typeof container === 'string' ? $(container) : container;
  if (!text) { box.replaceChildren(); return; }
  box.replaceChildren(el('p', { class: `msg ${kind}`, role: kind === 'error' ? 'alert' : 'status', text }));
}
function fieldError(id, text) {
  const box = $(`${id}-error`), input = $(id);
  box.textContent = text || '';
  box.hidden = !text;
  if (input) input.setAttribute('aria-invalid', text ? 'true' : 'false');
  if (text) box.setAttribute('role', 'alert'); else box.removeAttribute('role');
}
function table(caption, headers, rows, attrs = {}) {
  return el('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': caption },
    el('table', attrs, el('caption', { text: caption }),
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, rows)));
}
const td = (text, attrs) => el('td', attrs || {}, text);
const badge = (text, kind) => el('span', { class: `badge badge-${kind}`, text });

// ---------- sign-in, model picker, navigation ----------
function signOut(message) {
  state.key = ''; state.models = [];
  store.removeItem('leadscore.key');
  $('session').hidden = true; $('nav').hidden = true;
  location.hash = '#signin';
  route();
  say('signin-message', message || '', message ? 'error' : 'info');
}

async function signIn(event) {
  event.preventDefault();
  const key = $('signin-key').value.trim(), name = $('signin-name').value.trim();
  fieldError('signin-key', key ? '' : 'Enter your access key.');
  fieldError('signin-name', name ? '' : 'Enter your name: it goes in the change log.');
  say('signin-message', '');
  if (!key || !name) { $(key ? 'signin-name' : 'signin-key').focus(); return; }
  try {
    const data = await api('/v1/models', { key });
    state.key = key; state.name = name; store.setItem('leadscore.key', key); store.setItem('leadscore.name', name);
    $('signin-key').value = '';
    setModels(data.models || []);
    location.hash = '#thresholds';
    route();
  } catch (e) {
    say('signin-message', e.status === 401 ? 'That key was not accepted. Check it and try again.' : e.message);
  }
}

function setModels(models) {
  state.models = models;
  if (!models.some((m) => m.name === state.model)) state.model = models.length ? models[0].name : '';
  store.setItem('leadscore.model', state.model);
  $('model').replaceChildren(...models.map((m) => el('option', { value: m.name, text: `${m.name} (${m.version})` })));
  $('model').value = state.model;
  $('who').textContent = `Signed in as ${state.name}`;
  $('session').hidden = false; $('nav').hidden = false;
}

const panes = {};
async function route() {
  let [name, ...rest] = (location.hash.slice(1) || 'thresholds').split('/');
  if (!state.key) name = 'signin';
  else if (name === 'signin' || !panes[name]) name = 'thresholds';
  if (state.key && !state.models.length) {
    try { setModels((await api('/v1/models')).models || []); } catch (e) { if (!state.key) return; }
  }
  if (state.key) applyWords();
  for (const pane of document.querySelectorAll('.pane')) pane.hidden = pane.id !== `pane-${name}`;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.pane === name || (name === 'lead' && link.dataset.pane === 'queue')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${$(`${name}-title`).textContent} – Lead scoring console`;
  if (name === 'signin') { $('signin-name').value = state.name; return; }
  if (!state.model) { say(`${name}-message`, 'The server serves no model yet.'); return; }
  await panes[name](decodeURIComponent(rest.join('/')));
}
function focusPane(name) { const h = $(`${name}-title`); if (h && document.activeElement === document.body) h.focus({ preventScroll: true }); }

// ---------- charts (inline SVG) ----------
const W = 440, H = 300, M = { l: 66, r: 18, t: 14, b: 48 };
function chartFrame(label, desc, xLabel, yLabel, xTicks, yTicks, sx, sy) {
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'chart' },
    svg('title', { text: label }), svg('desc', { text: desc }));
  const axes = svg('g', { class: 'axes', 'aria-hidden': 'true' });
  xTicks.forEach(([v, text], i) => {
    const anchor = xTicks.length > 1 && i === xTicks.length - 1 && sx(v) > W - M.r - 20 ? 'end' : 'middle';
    axes.append(svg('line', { x1: sx(v), x2: sx(v), y1: M.t, y2: H - M.b, class: 'grid' }),
      svg('text', { x: anchor === 'end' ? Math.min(sx(v) + 12, W - 2) : sx(v), y: H - M.b + 17, 'text-anchor': anchor, text }));
  });
  for (const [v, text] of yTicks) {
    axes.append(svg('line', { x1: M.l, x2: W - M.r, y1: sy(v), y2: sy(v), class: 'grid' }),
      svg('text', { x: M.l - 6, y: sy(v) + 4.5, 'text-anchor': 'end', text }));
  }
  axes.append(svg('line', { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: 'axis' }),
    svg('line', { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: 'axis' }),
    svg('text', { x: (M.l + W - M.r) / 2, y: H - 8, 'text-anchor': 'middle', class: 'axis-label', text: xLabel }),
    svg('text', { x: 13, y: (M.t + H - M.b) / 2, 'text-anchor': 'middle', class: 'axis-label', transform: `rotate(-90 13 ${(M.t + H - M.b) / 2})`, text: yLabel }));
  root.append(axes);
  return root;
}
const linear = (max, lo, hi) => (v) => lo + (hi - lo) * (max > 0 ? v / max : 0);
// Round tick steps (1 %, 2 %, 2.5 %, 5 %, ...) giving 3 to 6 ticks up to max.
function pctTicks(max) {
  const step = [0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5].find((s) => max / s <= 5) || 1;
  const ticks = [];
  for (let v = 0; v <= max + 1e-9; v += step) ticks.push([v, fmt.pct(+v.toFixed(6))]);
  return ticks;
}
const niceMax = (x) => Math.min(1, Math.max(0.05, Math.ceil(x * 20) / 20));

// A line chart of [{x, y}] series on percentage axes, optionally with the diagonal.
function lineChart({ label, desc, xLabel, yLabel, series, diagonal, xMax = 1, yMax = 1, dots = false }) {
  const sx = linear(xMax, M.l, W - M.r), sy = linear(yMax, H - M.b, M.t);
  const root = chartFrame(label, desc, xLabel, yLabel, pctTicks(xMax), pctTicks(yMax), sx, sy);
  if (diagonal) {
    const d = Math.min(xMax, yMax);
    root.append(svg('line', { x1: sx(0), y1: sy(0), x2: sx(d), y2: sy(d), class: 'diagonal' }));
  }
  for (const s of series) {
    root.append(svg('polyline', { points: s.points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' '), class: `line ${s.cls || ''}` }));
    if (dots) for (const p of s.points) root.append(svg('circle', { cx: sx(p.x), cy: sy(p.y), r: 3.5, class: `dot ${s.cls || ''}` }));
  }
  return root;
}

// Score histogram with the grade bands as coloured regions and the sales-ready cut-off as a
// dashed line. The probability axis is square-root scaled: most leads sit near 0.
function histogramChart(bins, thresholds, w) {
  const xMax = bins.length ? bins[bins.length - 1].to : 1;
  const yMax = Math.max(1, ...bins.map((b) => b.rows));
  const sx = (v) => M.l + (W - M.l - M.r) * Math.sqrt(Math.max(0, Math.min(v, xMax)) / xMax);
  const sy = (v) => H - M.b - (H - M.t - M.b) * Math.sqrt(v / yMax);
  const xt = [0, 0.01, 0.05, 0.1, 0.25, 0.5, 1].filter((v) => v <= xMax + 1e-9).map((v) => [v, fmt.pct(v)]);
  const yt = [0, 0.05, 0.25, 0.5, 1].map((f) => [f * yMax, fmt.num(Math.round(f * yMax), 0)]);
  const { a, b, c } = thresholds.grades;
  const label = `Held-out ${w.entities} by predicted probability, with grade A from ${fmt.pct(a)}, B from ${fmt.pct(b)}, C from ${fmt.pct(c)} and ${w.flagged} from ${fmt.pct(thresholds.sales_ready)}`;
  const root = chartFrame(label, `Bars: number of held-out ${w.entities} in each probability range (square-root scales). Shaded regions: grade bands. Dashed line: ${w.flaggedBefore} cut-off.`,
    'Predicted probability (square-root scale)', `${upperFirst(w.entities)} (square-root scale)`, xt, yt, sx, sy);
  const bands = [['D', 0, c], ['C', c, b], ['B', b, a], ['A', a, xMax]];
  const g = svg('g', { class: 'bands' }), labels = svg('g', { class: 'band-labels' });
  for (const [grade, from, to] of bands) {
    if (from >= xMax) continue;
    const x1 = sx(from), x2 = sx(to);
    g.append(svg('rect', { x: x1, y: M.t, width: Math.max(0, x2 - x1), height: H - M.t - M.b, class: `band band-${grade.toLowerCase()}` }));
    if (x2 - x1 > 12) labels.append(svg('text', { x: (x1 + x2) / 2, y: M.t + 14, 'text-anchor': 'middle', class: 'band-label', text: grade }));
    if (from > 0) labels.append(svg('line', { x1, x2: x1, y1: M.t, y2: H - M.b, class: 'band-edge' }));
  }
  root.insertBefore(g, root.querySelector('.axes'));
  for (const bin of bins) {
    if (!bin.rows) continue;
    root.append(svg('rect', { x: sx(bin.from) + 0.5, y: sy(bin.rows), width: Math.max(1, sx(bin.to) - sx(bin.from) - 1), height: H - M.b - sy(bin.rows), class: 'bar' }));
  }
  root.append(labels);
  const sr = sx(thresholds.sales_ready);
  root.append(svg('line', { x1: sr, x2: sr, y1: M.t, y2: H - M.b, class: 'cutoff' }),
    svg('text', { x: Math.min(sr + 4, W - M.r - 70), y: M.t + 30, class: 'cutoff-label', text: upperFirst(w.flagged) }));
  return root;
}

// Vertical bars, one per item: [{label, value}] with values as shares.
function barChart({ label, desc, xLabel, yLabel, items }) {
  const yMax = niceMax(Math.max(0.01, ...items.map((i) => i.value)));
  const step = (W - M.l - M.r) / items.length;
  const sx = (i) => M.l + step * i, sy = linear(yMax, H - M.b, M.t);
  const root = chartFrame(label, desc, xLabel, yLabel, [], pctTicks(yMax), sx, sy);
  items.forEach((item, i) => {
    root.append(svg('rect', { x: sx(i) + step * 0.15, y: sy(item.value), width: step * 0.7, height: H - M.b - sy(item.value), class: 'bar' }),
      svg('text', { x: sx(i) + step / 2, y: H - M.b + 16, 'text-anchor': 'middle', text: item.label }));
  });
  return root;
}

// ---------- thresholds pane ----------
const th = { model: '', inForce: null, health: null, healthFor: '', preview: null, seq: 0, timer: 0, mode: 'probability', gradesEdited: false };

function parseNumber(text) {
  const t = String(text).trim().replace(/\s/g, '');
  if (t === '') return { error: 'empty' };
  const n = Number(t.replace(/,(?=\d+$)/, '.'));
  if (!Number.isFinite(n)) return { error: 'nan' };
  return { value: n };
}

function readCapacity() {
  const p = parseNumber($('capacity-number').value), w = wordsOf(th.model);
  let error = '';
  if (p.error === 'empty') error = `Enter how many ${w.capacity}, for example 40.`;
  else if (p.error) error = `${upperFirst(w.entities)} a week must be a number, for example 40.`;
  else if (p.value <= 0) error = `${upperFirst(w.entities)} a week must be more than 0.`;
  fieldError('capacity-number', error);
  return error ? null : p.value;
}

function readGrades() {
  const values = {}, byCapacity = th.mode === 'capacity', perWeek = `${wordsOf(th.model).entities} a week`;
  let ok = true;
  for (const g of ['a', 'b', 'c']) {
    const p = parseNumber($(`grade-${g}`).value), G = g.toUpperCase();
    let error = '';
    if (p.error === 'empty') error = `Enter grade ${G}'s ${byCapacity ? perWeek : 'cut-off in %'}.`;
    else if (p.error) error = `Grade ${G}'s ${byCapacity ? perWeek : 'cut-off'} must be a number.`;
    else if (p.value <= 0) error = `Grade ${G}'s ${byCapacity ? perWeek : 'cut-off'} must be more than 0.`;
    else if (!byCapacity && p.value >= 100) error = `Grade ${G}'s cut-off must be below 100 %.`;
    fieldError(`grade-${g}`, error);
    if (error) ok = false; else values[g] = p.value;
  }
  if (ok && !byCapacity) {
    if (values.a <= values.b) { fieldError('grade-a', 'Grade A must start above grade B.'); ok = false; }
    if (values.b <= values.c) { fieldError('grade-b', 'Grade B must start above grade C.'); ok = false; }
  }
  if (!ok) return null;
  // Bands not edited are sent exactly as in force (the fields show them rounded).
  if (!th.gradesEdited && th.inForce) return { grades: { ...th.inForce.thresholds.grades } };
  const round = (x) => Number(x.toPrecision(6));
  return byCapacity ? { grades_per_week: values } : { grades: { a: round(values.a / 100), b: round(values.b / 100), c: round(values.c / 100) } };
}

function setGradeMode(mode, fromPreview) {
  const source = fromPreview || th.preview || th.inForce, w = wordsOf(th.model);
  th.mode = mode;
  for (const g of ['a', 'b', 'c']) {
    const G = g.toUpperCase();
    $(`grade-${g}-label`).textContent = mode === 'capacity' ? `${upperFirst(w.entities)} a week in grade ${G}` : `Grade ${G} from (%)`;
    if (source) {
      $(`grade-${g}`).value = mode === 'capacity'
        ? String(Math.max(1, Math.round(source.grades.find((r) => r.grade === G).leads_per_week)))
        : String(+(source.thresholds.grades[g] * 100).toPrecision(3));
    }
    fieldError(`grade-${g}`, '');
  }
}

function resetEditor() {
  const f = th.inForce;
  const cap = Math.max(1, Math.round(f.sales_ready.leads_per_week));
  $('capacity-number').value = String(cap);
  $('capacity-range').value = String(cap);
  fieldError('capacity-number', '');
  th.preview = null; th.gradesEdited = false;
  $(`grade-mode-${th.mode}`).checked = true;
  setGradeMode(th.mode, f);
  say('save-result', '');
}

function showInForce(f) {
  const t = f.thresholds, sr = f.sales_ready, w = wordsOf(th.model);
  $('in-force').replaceChildren(
    el('p', {}, `${upperFirst(w.flagged)} from probability `, el('strong', { id: 'in-force-cutoff', 'data-value': t.sales_ready, text: fmt.pct(t.sales_ready) }),
      `: about ${fmt.perWeek(sr.leads_per_week, w)}, of which ${fmt.pct(sr.precision)} ${w.convert}, catching ${fmt.pct(sr.share_of_conversions)} of all ${w.positives}.`),
    el('p', {}, `Grades: A from ${fmt.pct(t.grades.a)}, B from ${fmt.pct(t.grades.b)}, C from ${fmt.pct(t.grades.c)}, D below. `
      + `${fmt.perWeek(f.volume_per_week, w)} ${w.arrive} in all (from ${fmt.num(f.held_out.rows, 0)} held-out ${w.entities}).`));
}

panes.thresholds = async function () {
  const model = state.model;
  say('thresholds-message', '');
  try {
    const f = await api(`/v1/thresholds/${enc(model)}`);
    if (model !== state.model) return;
    const fresh = th.model !== model;
    th.model = model; th.inForce = f;
    showInForce(f);
    $('capacity-range').max = String(Math.max(10, Math.ceil(f.volume_per_week)));
    if (fresh) resetEditor();
    scheduleUpdate(0);
  } catch (e) { say('thresholds-message', e.message); }
  focusPane('thresholds');
  loadHistogram(model);
};

async function loadHistogram(model) {
  const key = `${model}/${currentModel() && currentModel().version}`;
  if (th.healthFor !== key) {
    try { th.health = await api(`/v1/models/${enc(model)}/health`); th.healthFor = key; } catch (e) {
      th.health = null;
      $('histogram').replaceChildren(el('p', { class: 'note', text: `The score histogram is not available: ${e.message}` }));
      return;
    }
  }
  drawHistogram();
}
function drawHistogram() {
  if (!th.health) return;
  const t = (th.preview && th.preview.thresholds) || (th.inForce && th.inForce.thresholds);
  if (t) $('histogram').replaceChildren(histogramChart(th.health.histogram, t, wordsOf(th.model)));
}

function scheduleUpdate(delay = 300) {
  clearTimeout(th.timer);
  $('capacity-range').setAttribute('aria-valuetext', fmt.perWeek(Number($('capacity-range').value), wordsOf(th.model)));
  th.timer = setTimeout(updateFigures, delay);
}

async function updateFigures() {
  const model = th.model, seq = ++th.seq;
  const cap = readCapacity();
  const grades = readGrades();
  if (cap === null) { $('capacity-status').textContent = ''; return; }
  $('capacity-status').textContent = 'Updating…';
  try {
    const answer = await api(`/v1/thresholds/${enc(model)}?capacity_per_week=${enc(cap)}`);
    if (seq !== th.seq) return;
    const row = answer.capacity;
    const cut = $('capacity-cutoff');
    cut.textContent = fmt.pct(row.threshold);
    cut.dataset.value = String(row.threshold);
    $('capacity-precision').textContent = fmt.pct(row.precision);
    $('capacity-caught').textContent = fmt.pct(row.share_of_conversions);
    $('capacity-expected').textContent = fmt.num(row.expected_conversions_per_week, 1);
    $('capacity-figures').dataset.capacity = String(cap);
    const volume = th.inForce ? th.inForce.volume_per_week : Infinity, w = wordsOf(model);
    $('capacity-status').textContent = cap >= volume
      ? `${fmt.perWeek(cap, w)} is as many as ${w.arrive} (about ${fmt.perWeek(volume, w)}): every ${w.entity} would be ${w.flagged}.`
      : `For ${fmt.perWeek(cap, w)}: ${w.flagged} from ${fmt.pct(row.threshold)}.`;
  } catch (e) {
    if (seq !== th.seq) return;
    $('capacity-status').textContent = '';
    fieldError('capacity-number', e.message);
    return;
  }
  if (!grades) return;
  try {
    const preview = await api(`/v1/thresholds/${enc(model)}/preview`, { method: 'POST', body: { sales_ready_per_week: cap, ...grades } });
    if (seq !== th.seq) return;
    th.preview = preview;
    showPreview(preview);
    drawHistogram();
  } catch (e) {
    if (seq !== th.seq) return;
    const target = fieldFor(e.field);
    if (target) fieldError(target, e.message);
    else $('preview-table').tBodies[0].replaceChildren(el('tr', {}, el('td', { colspan: 5, text: `No preview: ${e.message}` })));
  }
}

function showPreview(p) {
  const w = wordsOf(th.model);
  $('preview-table').tBodies[0].replaceChildren(...p.grades.map((r) => el('tr', { 'data-grade': r.grade },
    el('th', { scope: 'row' }, badge(r.grade, `grade-${r.grade.toLowerCase()}`)),
    td(`${fmt.pct(r.from)} – ${fmt.pct(r.to)}`), td(fmt.perWeek(r.leads_per_week, w)), td(fmt.pct(r.precision)), td(fmt.num(r.expected_conversions_per_week, 1)))));
}

// The input showing a server error's field (`sales_ready_per_week`, `grades.a`, ...).
function fieldFor(field) {
  if (!field) return null;
  if (/sales_ready/.test(field)) return 'capacity-number';
  const m = /^grades(?:_per_week)?(?:\.([abc]))?/.exec(field);
  return m ? `grade-${m[1] || 'a'}` : null;
}

async function saveThresholds() {
  clearTimeout(th.timer);
  const cap = readCapacity(), grades = readGrades();
  if (cap === null || !grades) {
    say('save-result', 'Nothing was saved: correct the fields marked above first.');
    $(cap === null ? 'capacity-number' : ['a', 'b', 'c'].map((g) => `grade-${g}`).find((id) => $(id).getAttribute('aria-invalid') === 'true')).focus();
    return;
  }
  const model = th.model;
  $('save-thresholds').disabled = true;
  say('save-result', 'Saving…', 'info');
  try {
    const answer = await api(`/admin/thresholds/${enc(model)}`, { method: 'PUT', body: { sales_ready_per_week: cap, ...grades, by: state.name } });
    const logged = answer.logged || {};
    const t = answer.thresholds;
    say('save-result', `Saved by ${logged.who || state.name} at ${fmt.time(logged.at)}; the server now uses cut-off ${fmt.pct(t.sales_ready)} ${wordsOf(model).forFlagged} (grades A from ${fmt.pct(t.grades.a)}, B from ${fmt.pct(t.grades.b)}, C from ${fmt.pct(t.grades.c)}).`, 'success');
    $('save-result').firstChild.dataset.value = String(t.sales_ready);
    th.inForce = await api(`/v1/thresholds/${enc(model)}`);
    showInForce(th.inForce);
    scheduleUpdate(0);
  } catch (e) {
    say('save-result', `Not saved: ${e.message}`);
    const target = fieldFor(e.field);
    if (target) fieldError(target, e.message);
  } finally { $('save-thresholds').disabled = false; }
}

// ---------- model health pane ----------
panes.health = async function (_, by) {
  const model = state.model;
  say('health-message', '');
  let h;
  try { h = await api(`/v1/models/${enc(model)}/health${by ? `?by=${enc(by)}` : ''}`); } catch (e) {
    $('health-body').replaceChildren(); say('health-message', e.kind === 'no_held_out_predictions' ? `This model version kept no held-out predictions, so its health cannot be shown. (${e.message})` : e.message);
    focusPane('health'); return;
  }
  if (model !== state.model) return;
  const v = h.validation || {}, ho = h.held_out, w = wordsOf(model);
  const words = el('section', { class: 'card', 'aria-labelledby': 'validation-title' }, el('h3', { id: 'validation-title', text: 'How good is the model?' }),
    el('ul', { class: 'plain' },
      el('li', {}, el('strong', { text: `ROC AUC ${fmt.fixed(h.roc_auc ?? v.roc_auc)}` }), `: shown a ${w.entity} that ${w.positive} and one that ${w.negative}, the model scores the ${w.converting} one higher ${fmt.pct(h.roc_auc ?? v.roc_auc)} of the time (0.5 would be guessing).`),
      el('li', {}, el('strong', { text: `PR AUC ${fmt.fixed(v.pr_auc)}` }), `: the average precision over all cut-offs, against ${fmt.pct(ho.base_rate)} of ${w.entities} ${w.converting} overall.`),
      el('li', {}, el('strong', { text: `Calibration error ${fmt.pct(v.ece)}` }), `: on average, the predicted probability is this far from the share that actually ${w.converts}.`),
      el('li', {}, `Checked on ${fmt.num(ho.rows, 0)} held-out ${w.entities} the model never saw (${fmt.num(ho.conversions, 0)} ${w.positives}${ho.weeks_covered ? `, about ${fmt.num(ho.weeks_covered, 0)} weeks` : ''}; ${fmt.words(v.scheme || 'validation')}).`)));
  const calMax = niceMax(Math.max(...h.calibration.map((c) => Math.max(c.mean_predicted, c.observed_rate))));
  const charts = el('div', { class: 'charts' },
    el('figure', {}, lineChart({ label: `ROC curve, area ${fmt.fixed(h.roc_auc)}`, desc: `Share of ${w.converting} ${w.entities} flagged against share of ${w.notConverting} ${w.entities} flagged, as the cut-off goes down. The diagonal is guessing.`,
      xLabel: 'False positive rate', yLabel: 'True positive rate', diagonal: true, series: [{ points: h.roc.map((p) => ({ x: p.fpr, y: p.tpr })) }] }),
    el('figcaption', { text: 'ROC: the higher above the diagonal, the better the ranking.' })),
    el('figure', {}, lineChart({ label: `Calibration: predicted probability against the share that ${w.positive}`, desc: `Each dot is a tenth of the held-out ${w.entities}. On the diagonal, predictions are right on average.`,
      xLabel: 'Predicted probability', yLabel: `Observed ${w.rate}`, diagonal: true, dots: true, xMax: calMax, yMax: calMax, series: [{ points: h.calibration.map((c) => ({ x: c.mean_predicted, y: c.observed_rate })) }] }),
    el('figcaption', { text: 'Calibration: dots near the diagonal mean the probabilities can be taken at their word.' })),
    el('figure', {}, lineChart({ label: `Gains: share of ${w.positives} caught against share of ${w.entities} contacted`, desc: `Contacting ${w.bestFirst}. The diagonal is contacting at random.`,
      xLabel: `Share of ${w.entities} contacted`, yLabel: `Share of ${w.positives} caught`, diagonal: true, series: [{ points: h.gains.map((g) => ({ x: g.share_of_leads, y: g.share_of_conversions })) }] }),
    el('figcaption', { text: `Gains: how many ${w.positives} you reach by ${w.working}.` })));
  const deciles = el('section', { class: 'card', 'aria-labelledby': 'deciles-title' }, el('h3', { id: 'deciles-title', text: `${upperFirst(w.outcome)} by score decile` }),
    el('figure', {}, barChart({ label: `${upperFirst(w.rate)} by score decile, decile 1 has the highest scores`, desc: h.deciles.map((d) => `Decile ${d.decile}: ${fmt.pct(d.conversion_rate)}`).join('; '),
      xLabel: 'Score decile (1 = highest scores)', yLabel: upperFirst(w.rate), items: h.deciles.map((d) => ({ label: String(d.decile), value: d.conversion_rate })) })),
    table(`Held-out ${w.entities} by score decile`, ['Decile', 'Probability', upperFirst(w.entities), upperFirst(w.positives), upperFirst(w.rate), 'Lift'],
      h.deciles.map((d) => el('tr', {}, el('th', { scope: 'row', text: d.decile }), td(`${fmt.pct(d.from)} – ${fmt.pct(d.to)}`), td(fmt.num(d.rows, 0)), td(fmt.num(d.conversions, 0)), td(fmt.pct(d.conversion_rate)), td(`${fmt.num(d.lift, 1)}×`)))));
  const select = el('select', { id: 'health-by', onchange: (e) => panes.health(null, e.target.value) },
    el('option', { value: '', text: 'Choose a field' }), h.fields.map((f) => el('option', { value: f, text: fmt.words(f), selected: h.by && h.by.field === f })));
  const byBox = el('section', { class: 'card', 'aria-labelledby': 'by-title' }, el('h3', { id: 'by-title', text: `${upperFirst(w.outcome)} by profile field` }),
    h.fields.length ? el('div', { class: 'field inline' }, el('label', { for: 'health-by', text: 'Profile field' }), select) : el('p', { class: 'note', text: `The held-out ${w.entities} carry no categorical profile field.` }),
    h.by ? table(`Held-out ${w.entities} by ${fmt.words(h.by.field)}`, ['Value', upperFirst(w.entities), upperFirst(w.positives), upperFirst(w.rate), 'Mean predicted'],
      h.by.levels.map((l) => el('tr', {}, el('th', { scope: 'row', text: l.level === '' ? '(missing)' : l.level }), td(fmt.num(l.rows, 0)), td(fmt.num(l.conversions, 0)), td(fmt.pct(l.conversion_rate)), td(fmt.pct(l.mean_probability))))) : null);
  $('health-body').replaceChildren(words, el('section', { class: 'card', 'aria-labelledby': 'curves-title' }, el('h3', { id: 'curves-title', text: 'Held-out curves' }), charts), deciles, byBox);
  if (by) $('health-by').focus(); else focusPane('health');
};

// ---------- versions pane ----------
const ACTIONS = { promote: 'Promoted', revert: 'Reverted', refuse: 'Kept off by the publish gate', thresholds: 'Thresholds changed' };
panes.versions = async function () {
  const model = state.model;
  let v;
  try { v = await api(`/v1/models/${enc(model)}/versions`); } catch (e) { $('versions-body').replaceChildren(); say('versions-message', e.message); focusPane('versions'); return; }
  if (model !== state.model) return;
  const summary = el('p', {}, `Served now: ${v.served}. `, v.live ? `Live (promoted): ${v.live}.` : 'No version was promoted, so the newest is served.',
    v.live_problem ? el('strong', { text: ` Problem with the live version: ${v.live_problem}` }) : '');
  const rows = v.versions.map((x) => el('tr', {},
    el('th', { scope: 'row', text: x.version }), td(fmt.date(x.created_at)), td(x.kind), td(fmt.fixed(x.roc_auc, 3)), td(fmt.pct(x.ece)),
    td([x.live ? badge('Live', 'live') : null, ' ', x.served ? badge('Served', 'served') : null]),
    td(x.live ? '' : el('button', { type: 'button', class: 'secondary small', 'data-version': x.version, onclick: () => changeVersion('promote', x.version), text: `Promote ${x.version}` }))));
  const log = v.log.length ? table('Registry log, newest first', ['When', 'Who', 'What', 'Why'], v.log.map((e) => el('tr', { class: e.action === 'refuse' ? 'refused' : '' },
    td(fmt.date(e.at)), td(e.who || '–'), td(`${ACTIONS[e.action] || e.action}${e.version ? ` ${e.version}` : ''}${e.previous && e.previous !== e.version && e.action !== 'thresholds' ? ` (was ${e.previous})` : ''}`), td(e.why || '–'))))
    : el('p', { class: 'note', text: 'Nothing logged for this model yet.' });
  $('versions-body').replaceChildren(summary,
    table(`Versions of ${model}, newest first`, ['Version', 'Trained', 'Kind', 'ROC AUC', 'Calibration error', 'Status', 'Action'], rows),
    el('div', { class: 'actions' }, el('button', { type: 'button', id: 'revert-version', class: 'secondary', onclick: () => changeVersion('revert'), text: 'Revert to the previous live version' })),
    el('h3', { text: 'Registry log' }), log);
  focusPane('versions');
};
async function changeVersion(action, version) {
  const model = state.model;
  const question = action === 'promote' ? `Make ${version} the live version of ${model}? The server will score with it at once.` : `Revert ${model} to the version that was live before? The server will score with it at once.`;
  if (!window.confirm(question)) return;
  try {
    const body = { by: state.name, why: action === 'promote' ? 'promoted from the console' : 'reverted from the console' };
    if (version) body.version = version;
    const answer = await api(`/admin/models/${enc(model)}/${action}`, { method: 'POST', body });
    setModels((await api('/v1/models')).models || []);
    await panes.versions();
    say('versions-message', `${ACTIONS[action]}: ${model} now serves ${answer.served}.`, 'success');
  } catch (e) { say('versions-message', `${action === 'promote' ? 'Not promoted' : 'Not reverted'}: ${e.message}`); }
}

// ---------- drift pane ----------
function psiStatus(psi) {
  if (psi === null || psi === undefined) return [badge('No data', 'none'), ''];
  if (psi > 0.2) return [badge('Alert', 'alert'), 'row-alert'];
  if (psi >= 0.1) return [badge('Watch', 'watch'), 'row-watch'];
  return [badge('Stable', 'stable'), ''];
}
const byPsi = (a, b) => (b.psi ?? -1) - (a.psi ?? -1);
panes.drift = async function () {
  const model = state.model;
  let d;
  try { d = await api(`/v1/drift/${enc(model)}`); } catch (e) {
    $('drift-body').replaceChildren();
    say('drift-message', e.kind === 'no_drift_reference' ? `This model version has no training reference to compare with, so drift cannot be measured. (${e.message})` : e.message);
    focusPane('drift'); return;
  }
  if (model !== state.model) return;
  say('drift-message', '');
  const hours = d.window_seconds / 3600;
  const window = hours === 1 ? 'the last hour' : hours < 1 ? `the last ${fmt.num(d.window_seconds / 60, 0)} minutes` : `the last ${fmt.num(hours, 1)} hours`;
  const rows = d.drift.rows, w = wordsOf(model);
  const intro = el('p', {}, `${fmt.num(rows, 0)} scores given in ${window} (a ${w.entity} is scored again at each event), compared with ${fmt.num(d.training_rows, 0)} training rows. `,
    'PSI (population stability index) below 0.1 is stable, 0.1 to 0.2 is worth watching, above 0.2 is an alert.');
  if (!rows) {
    $('drift-body').replaceChildren(intro, el('p', { class: 'note', role: 'status', text: `Nothing was scored in ${window} yet, so there is nothing to compare. Drift shows once ${w.entities} are scored.` }));
    focusPane('drift'); return;
  }
  const fields = d.drift.fields.slice().sort(byPsi).map((f) => {
    const [b, cls] = psiStatus(f.psi);
    return el('tr', { class: cls }, el('th', { scope: 'row', text: fmt.words(f.field) }), td(fmt.fixed(f.psi, 3)), td(b),
      td(`${fmt.pct(f.missing_share)} (training ${fmt.pct(f.training_missing_share)})`), td(fmt.pct(f.unknown_share)), td(`${fmt.pct(f.other_share)} (training ${fmt.pct(f.training_other_share)})`));
  });
  const features = d.drift.features.slice().sort(byPsi).map((f) => {
    const [b, cls] = psiStatus(f.psi);
    return el('tr', { class: cls }, el('th', { scope: 'row', text: fmt.words(f.feature) }), td(fmt.fixed(f.psi, 3)), td(b),
      td(`${fmt.pct(f.missing_share)} (training ${fmt.pct(f.training_missing_share)})`));
  });
  const inputs = el('div', {}), SHORT = 15;
  const showInputs = (all, focus) => {
    const shown = all ? features : features.slice(0, SHORT);
    inputs.replaceChildren(table(`Model inputs, largest shift first (${shown.length} of ${features.length})`, ['Input', 'PSI', 'Status', 'Missing now'], shown),
      features.length > SHORT ? el('button', { type: 'button', class: 'secondary', id: 'drift-all', 'aria-expanded': String(all),
        onclick: () => showInputs(!all, true), text: all ? `Show the ${SHORT} largest shifts only` : `Show all ${features.length} model inputs` }) : null);
    if (focus) $('drift-all').focus();
  };
  const alerts = [...d.drift.fields, ...d.drift.features].filter((f) => f.psi > 0.2).length;
  $('drift-body').replaceChildren(intro,
    el('p', { class: alerts ? 'msg error' : 'msg success', text: alerts ? `${alerts} input${alerts > 1 ? 's' : ''} moved a lot (Alert): check where these ${w.entities} come from.` : 'No input moved enough to raise an alert.' }),
    el('h3', { text: 'Profile fields' }),
    table('Profile fields, largest shift first', ['Field', 'PSI', 'Status', 'Missing now', 'Unknown values', 'Rare values ("other")'], fields),
    el('h3', { text: 'Model inputs' }), inputs);
  showInputs(false);
  focusPane('drift');
};

// ---------- sales queue and lead pages ----------
const reasonText = (r) => `${fmt.words(r.feature)}: ${r.value}`;
panes.queue = async function () {
  const model = state.model, grade = $('queue-grade').value, w = wordsOf(model);
  let q;
  try { q = await api(`/v1/leads/top/${enc(model)}?limit=50${grade ? `&grade=${enc(grade)}` : ''}`); } catch (e) {
    $('queue-body').replaceChildren();
    if (e.kind === 'no_store') say('queue-message', `This server keeps no ${w.entity} history (it runs without its entity store), so there is no ${w.queue} to show.`, 'info');
    else say('queue-message', e.message);
    focusPane('queue'); return;
  }
  if (model !== state.model) return;
  say('queue-message', '');
  if (!q.leads.length) { $('queue-body').replaceChildren(el('p', { class: 'note', text: grade ? `No ${w.open} ${w.entity} has grade ${grade} now.` : `No ${w.open} ${w.entity} has been scored yet.` })); focusPane('queue'); return; }
  const rows = q.leads.map((l, i) => el('tr', {},
    td(i + 1), el('th', { scope: 'row' }, el('a', { href: `#lead/${enc(l.entity)}`, text: l.entity })),
    td(badge(l.grade, `grade-${l.grade.toLowerCase()}`)), td(l.score), td(fmt.pct(l.probability)), td(l.sales_ready ? 'Yes' : 'No'),
    td(l.reasons && l.reasons.positive.length ? el('ul', { class: 'reasons' }, l.reasons.positive.slice(0, 2).map((r) => el('li', { text: reasonText(r) }))) : 'Reasons not available')));
  $('queue-body').replaceChildren(table(`Top ${q.leads.length} ${w.open} ${w.entities} by score${grade ? `, grade ${grade}` : ''}`, ['#', upperFirst(w.entity), 'Grade', 'Score', 'Probability', upperFirst(w.flagged), 'Top reasons'], rows, { id: 'queue-table' }));
  focusPane('queue');
};

panes.lead = async function (id) {
  const model = state.model;
  let w = wordsOf(model);
  $('lead-title').textContent = `${upperFirst(w.entity)} ${id}`;
  say('lead-message', '');
  let entity;
  try { entity = await api(`/v1/entities/${enc(id)}`); } catch (e) {
    $('lead-body').replaceChildren();
    if (e.kind === 'no_store') say('lead-message', `This server keeps no ${w.entity} history, so ${w.entity} pages are not available.`, 'info');
    else say('lead-message', e.message);
    focusPane('lead'); return;
  }
  // The entity's kind picks the task of the models that score it (a customer: churn).
  w = WORDS[entity.kind === 'customer' ? 'churn' : 'propensity'];
  $('lead-title').textContent = `${upperFirst(w.entity)} ${id}`;
  const profile = el('dl', { class: 'profile' }, Object.entries(entity.profile || {}).map(([k, v]) => el('div', {}, el('dt', { text: fmt.words(k) }), el('dd', { text: v === null ? '–' : String(v) }))));
  const scores = (entity.scores || []).map((s) => el('section', { class: 'card score', 'aria-label': `Score by ${s.model}` },
    el('h4', { text: `${s.model} (${s.version})` }),
    el('p', {}, badge(s.grade, `grade-${String(s.grade).toLowerCase()}`), ` Score ${s.score}, probability ${fmt.pct(s.probability)}, ${s.sales_ready ? w.flagged : `not ${w.flagged}`}; scored ${fmt.date(s.scored_at)}.`),
    s.reasons ? el('div', { class: 'reason-cols' },
      el('div', {}, el('h5', { text: 'Raises the score' }), el('ul', { class: 'reasons' }, s.reasons.positive.map((r) => el('li', { text: reasonText(r) })))),
      el('div', {}, el('h5', { text: 'Lowers the score' }), el('ul', { class: 'reasons' }, s.reasons.negative.map((r) => el('li', { text: reasonText(r) })))))
      : el('p', { class: 'note', text: 'Reasons are not available for this score (the history or the model changed since).' })));
  const timeline = el('div', { id: 'lead-timeline' });
  $('lead-body').replaceChildren(
    el('p', {}, `${upperFirst(w.entity)} since ${fmt.date(entity.created_at)}; ${fmt.num(entity.events.count, 0)} events${entity.events.last ? `, the last ${fmt.date(entity.events.last)}` : ''}; ${entity.open ? w.open : w.closed}.`),
    el('section', { class: 'card', 'aria-labelledby': 'profile-title' }, el('h3', { id: 'profile-title', text: 'Profile' }), profile),
    el('section', { class: 'card', 'aria-labelledby': 'scores-title' }, el('h3', { id: 'scores-title', text: 'Current scores' }), scores.length ? scores : el('p', { class: 'note', text: 'Not scored yet.' })),
    el('section', { class: 'card', 'aria-labelledby': 'timeline-title' }, el('h3', { id: 'timeline-title', text: 'Timeline' }), timeline));
  focusPane('lead');
  try {
    const t = await api(`/v1/entities/${enc(id)}/timeline?model=${enc(model)}`);
    timeline.replaceChildren(timelineChart(t), el('h4', { id: 'events-title', text: `Events, newest first (${fmt.num(t.events.length, 0)} of ${fmt.num(t.events_total, 0)})` }),
      el('div', { class: 'events-wrap', tabindex: 0, role: 'region', 'aria-labelledby': 'events-title' }, el('ol', { class: 'events' }, t.events.map((e) => el('li', {}, el('time', { datetime: e.ts, text: fmt.date(e.ts) }), ' ',
        el('strong', { text: fmt.words(e.type) }), e.channel ? ` via ${fmt.words(e.channel)}` : '', e.value !== null && e.value !== undefined ? `, value ${fmt.num(e.value)}` : '')))));
  } catch (e) { timeline.replaceChildren(el('p', { class: 'note', role: 'status', text: `The timeline is not available: ${e.message}` })); }
};

function timelineChart(t) {
  const pts = t.scores.map((s) => ({ x: new Date(s.at).getTime(), y: s.probability }));
  if (!pts.length) return el('p', { class: 'note', text: 'No scores over time yet.' });
  const x0 = Math.min(...pts.map((p) => p.x)), x1 = Math.max(x0 + 86400000, ...pts.map((p) => p.x));
  const yMax = niceMax(Math.max(...pts.map((p) => p.y)) * 1.1);
  const sx = (v) => M.l + (W - M.l - M.r) * (v - x0) / (x1 - x0), sy = linear(yMax, H - M.b, M.t);
  const dateTick = (v) => [v, new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' }).format(new Date(v))];
  const last = t.scores[t.scores.length - 1];
  const label = `Probability over time: from ${fmt.pct(pts[0].y)} on ${fmt.date(t.scores[0].at)} to ${fmt.pct(last.probability)} now`;
  const root = chartFrame(label, 'The model\'s probability just after each of the latest events, and now.', 'Date', 'Probability', [x0, (x0 + x1) / 2, x1].map(dateTick), pctTicks(yMax), sx, sy);
  root.append(svg('polyline', { points: pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' '), class: 'line' }));
  for (const p of pts) root.append(svg('circle', { cx: sx(p.x), cy: sy(p.y), r: 3, class: 'dot' }));
  return el('figure', {}, root, el('figcaption', { text: `Score over time (${t.model ? `${t.model.name} ${t.model.version}` : 'no model'}).` }));
}

// ---------- wiring ----------
function init() {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut('You signed out.'));
  $('model').addEventListener('change', (e) => { state.model = e.target.value; store.setItem('leadscore.model', state.model); route(); });
  $('capacity-range').addEventListener('input', () => { $('capacity-number').value = $('capacity-range').value; scheduleUpdate(); });
  $('capacity-number').addEventListener('input', () => {
    const p = parseNumber($('capacity-number').value);
    if (!p.error && p.value > 0) $('capacity-range').value = String(Math.round(p.value));
    scheduleUpdate();
  });
  for (const g of ['a', 'b', 'c']) $(`grade-${g}`).addEventListener('input', () => { th.gradesEdited = true; scheduleUpdate(); });
  for (const radio of document.querySelectorAll('input[name="grade-mode"]')) radio.addEventListener('change', (e) => { setGradeMode(e.target.value); th.gradesEdited = true; scheduleUpdate(0); });
  $('save-thresholds').addEventListener('click', saveThresholds);
  $('revert-thresholds').addEventListener('click', () => { if (th.inForce) { resetEditor(); scheduleUpdate(0); say('save-result', 'Your edits were discarded: showing the thresholds in force.', 'info'); } });
  $('queue-grade').addEventListener('change', () => panes.queue());
  window.addEventListener('hashchange', route);
  route();
}
init();
