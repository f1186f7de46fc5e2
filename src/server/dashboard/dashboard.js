/* global document, window, sessionStorage, fetch, URLSearchParams, CSS */
// The Mailroom dashboard: plain ES2020, no framework, no CDN. It reads the admin API of the
// server that served it (same origin) every 2 s and draws what it reads. Two rules hold
// throughout:
// - data from the server is only ever written with textContent / attributes, never parsed as
//   HTML, so a topic, header or payload cannot inject markup;
// - the admin token lives in sessionStorage (this tab only) and travels as an Authorization
//   header, never in a URL, a cookie or the page.

const POLL_MS = 2000;
const TOKEN_KEY = 'mailroom.adminToken';
const DEAD_LETTER_LIMIT = 100;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = {
  /** The source chosen in the picker; null until the first status names the sources. */
  source: null,
  /** True when the server serves several sources: only then is `source` sent. */
  multiSource: false,
  topicFilter: '',
  /** Ids of dead letters ticked in the table. */
  selected: new Set(),
  /** The dead letters listed now, by id. */
  listed: new Map(),
  deadLetterCount: 0,
  lastStatus: null,
  /** Server time minus local time, so ages are measured on the server's clock. */
  skewMs: 0,
  lastOk: null,
  failing: false,
  /** The server answers but refuses the API (401/403): it wants the token. */
  refused: false,
  timer: null,
  busy: false,
};

const byId = (testid) => {
  const el = document.querySelector(`[data-testid="${testid}"]`);
  if (!el) throw new Error(`dashboard markup lacks data-testid=${testid}`);
  return el;
};

// ---------------------------------------------------------------- formatting

const numberFormat = new Intl.NumberFormat('en-US');
function fmtNum(n) {
  return n === null || n === undefined ? '–' : numberFormat.format(n);
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function fmtClock(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString('en-GB');
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function serverNow() {
  return Date.now() + state.skewMs;
}

function ageOf(iso) {
  return iso ? serverNow() - new Date(iso).getTime() : null;
}

function plural(n, word) {
  return `${fmtNum(n)} ${word}${n === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------- DOM helpers

/** Creates an element with text content and attributes; never parses HTML. */
function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function setBadge(node, text, tone, title) {
  node.textContent = text;
  node.className = tone ? `badge ${tone}` : 'badge';
  if (title) node.title = title;
  else node.removeAttribute('title');
}

function show(node, visible) {
  node.hidden = !visible;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

function withSource(path, params = {}) {
  const query = new URLSearchParams();
  if (state.multiSource && state.source) query.set('source', state.source);
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined) query.set(k, v);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function api(path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { headers, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    init.method = 'POST';
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(res.status, err.code ?? `http_${res.status}`, err.message ?? res.statusText);
  }
  return data;
}

/** Words for an API error that say what to do. */
function describeError(err) {
  if (!(err instanceof ApiError)) {
    return `Could not reach the server (${err && err.message ? err.message : err}). Is it still running?`;
  }
  if (err.status === 401) {
    return `The server wants the admin token (401 ${err.code}): ${err.message} Enter it in "Admin token" above.`;
  }
  if (err.code === 'mutations_disabled') {
    return `Mutations are disabled on this server (403 mutations_disabled): ${err.message}`;
  }
  if (err.status === 403) {
    return `The server refused the request (403 ${err.code}): ${err.message}`;
  }
  return `The server answered ${err.status} ${err.code}: ${err.message}`;
}

// ---------------------------------------------------------------- header and cards

function renderStatus(status) {
  byId('version').textContent = `version ${status.version}`;
  byId('owner').textContent = status.owner ?? 'none (admin server only)';
  byId('wakeup').textContent = status.wakeup ?? '–';

  const tr = status.transport;
  const trNode = byId('transport-state');
  if (tr.state === 'up') {
    setBadge(trNode, `${tr.name}: up`, 'ok', tr.since ? `up since ${fmtClock(tr.since)}` : '');
  } else if (tr.state === 'unavailable') {
    const since = tr.since ? ` since ${fmtClock(tr.since)} (${fmtAge(ageOf(tr.since))})` : '';
    setBadge(trNode, `${tr.name}: unavailable${since}`, 'bad', tr.error ?? '');
  } else {
    setBadge(trNode, 'none', '', 'this server runs without a relay, so no transport');
  }

  setBadge(
    byId('mutations'),
    status.mutations ? 'enabled' : 'disabled',
    status.mutations ? 'warn' : '',
    status.mutations
      ? 'replay and purge are allowed with the admin token'
      : 'no admin token is configured on the server: replay and purge are refused',
  );

  renderSourcePicker(status.sources);
  const source = status.sources.find((s) => s.name === state.source) ?? status.sources[0];
  renderCards(source);
}

function renderSourcePicker(sources) {
  state.multiSource = sources.length > 1;
  if (state.source === null || !sources.some((s) => s.name === state.source)) {
    state.source = sources.length > 0 ? sources[0].name : null;
  }
  const picker = byId('source-picker');
  show(picker, state.multiSource);
  const select = byId('source-select');
  const names = sources.map((s) => s.name);
  const current = Array.from(select.options).map((o) => o.value);
  if (names.join('\n') !== current.join('\n')) {
    select.replaceChildren(...names.map((n) => el('option', n, { value: n })));
  }
  select.value = state.source ?? '';
}

function renderCards(source) {
  const errorNode = byId('source-error');
  if (!source) {
    errorNode.textContent = 'The server reports no source.';
    show(errorNode, true);
    return;
  }
  if (source.error) {
    errorNode.textContent = `Source ${source.name}: ${source.error}`;
    show(errorNode, true);
  } else {
    show(errorNode, false);
  }
  const s = source.stats;
  const approx = s && s.approximate ? '≈ ' : '';
  if (!s) {
    // The store did not answer: no number is better than an old one shown as current.
    for (const id of [
      'backlog-total',
      'backlog-due',
      'backlog-scheduled',
      'backlog-inflight',
      'oldest-age',
      'dead-total',
    ]) {
      byId(id).textContent = '–';
    }
  } else {
    const due = Math.max(0, s.backlog - s.inFlight - s.scheduled);
    byId('backlog-total').textContent = approx + fmtNum(s.backlog);
    byId('backlog-due').textContent = fmtNum(due);
    byId('backlog-scheduled').textContent = fmtNum(s.scheduled);
    byId('backlog-inflight').textContent = fmtNum(s.inFlight);
    byId('oldest-age').textContent = s.oldestAgeMs === null ? 'none' : fmtAge(s.oldestAgeMs);
    byId('dead-total').textContent = approx + fmtNum(s.deadLetters);
    byId('card-dead').classList.toggle('alarm', s.deadLetters > 0);
    const note = byId('estimate-note');
    if (s.approximate) {
      note.textContent = `Estimated on a big table: ${(s.estimated ?? []).join(', ') || 'some counts'}.`;
      show(note, true);
    } else {
      show(note, false);
    }
  }
  if (source.acks) {
    byId('acks-awaiting').textContent = fmtNum(source.acks.awaiting);
    byId('acks-expired').textContent = fmtNum(source.acks.expired);
    byId('card-acks').classList.toggle('alarm', source.acks.expired > 0);
  } else {
    byId('acks-awaiting').textContent = 'off';
    byId('acks-expired').textContent = '–';
  }
}

// ---------------------------------------------------------------- charts

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs ?? {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** A round upper bound for the y axis: 1, 2, 5 × 10^n. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * Draws line series into `figure`'s plot: `series` is [{ name, values: [{ t, v }] }] with `t` in
 * ms and `v` a number or null (a gap). Drawn as SVG elements, so no library and no inline style.
 */
function drawChart(figure, series, unitLabel) {
  const plot = figure.querySelector('.plot');
  const W = 480;
  const H = 170;
  const left = 46;
  const right = 10;
  const top = 10;
  const bottom = 22;
  const all = series.flatMap((s) => s.values);
  const times = all.map((p) => p.t);
  const nodes = [];
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  if (times.length < 2) {
    root.setAttribute('aria-label', `${figure.querySelector('figcaption').textContent}: no samples yet`);
    root.append(
      svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'tick' }, 'waiting for samples…'),
    );
    plot.replaceChildren(root);
    return;
  }
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const span = Math.max(1, t1 - t0);
  const values = all.map((p) => p.v).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...values));
  const x = (t) => left + ((t - t0) / span) * (W - left - right);
  const y = (v) => top + (1 - v / max) * (H - top - bottom);

  nodes.push(svg('line', { x1: left, y1: y(0), x2: W - right, y2: y(0), class: 'axis' }));
  nodes.push(svg('line', { x1: left, y1: top, x2: left, y2: y(0), class: 'axis' }));
  for (const v of [0, max / 2, max]) {
    nodes.push(svg('line', { x1: left - 3, y1: y(v), x2: W - right, y2: y(v), class: 'axis', opacity: 0.4 }));
    const label = Number.isInteger(v) ? fmtNum(v) : v.toFixed(1);
    nodes.push(svg('text', { x: left - 6, y: y(v) + 3, 'text-anchor': 'end', class: 'tick' }, label));
  }
  nodes.push(svg('text', { x: left, y: H - 6, class: 'tick' }, fmtClock(t0)));
  nodes.push(svg('text', { x: W - right, y: H - 6, 'text-anchor': 'end', class: 'tick' }, fmtClock(t1)));

  const summary = [];
  series.forEach((s, i) => {
    // A gap (null) ends one polyline and the next value starts another.
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        // A lone value between gaps has no line to draw: a dot shows it.
        const [cx, cy] = run[0].split(',');
        nodes.push(svg('circle', { cx, cy, r: 3, class: `dot f${i}` }));
      } else if (run.length > 1) {
        nodes.push(svg('polyline', { points: run.join(' '), class: `line s${i}` }));
      }
      run = [];
    };
    for (const p of s.values) {
      if (p.v === null) flush();
      else run.push(`${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    }
    flush();
    const last = [...s.values].reverse().find((p) => p.v !== null);
    summary.push(`${s.name} now ${last ? fmtNum(Math.round(last.v * 10) / 10) : 'unknown'}`);
  });
  root.setAttribute(
    'aria-label',
    `${figure.querySelector('figcaption').textContent} from ${fmtClock(t0)} to ${fmtClock(t1)}: ${summary.join(', ')} ${unitLabel}`,
  );
  root.append(...nodes);
  const legend = el('div', null, { class: 'legend' });
  series.forEach((s, i) => {
    const item = el('span');
    item.append(el('span', null, { class: `swatch s${i}`, 'aria-hidden': 'true' }), s.name);
    legend.append(item);
  });
  plot.replaceChildren(root, legend);
}

function renderHistory(history, sourceName) {
  const points = history.points.filter((p) => sourceName === null || p.source === sourceName);
  const t = (p) => new Date(p.t).getTime();
  drawChart(
    byId('chart-backlog'),
    [
      { name: 'backlog', values: points.map((p) => ({ t: t(p), v: p.backlog })) },
      { name: 'in flight', values: points.map((p) => ({ t: t(p), v: p.inFlight })) },
      { name: 'dead letters', values: points.map((p) => ({ t: t(p), v: p.deadLetters })) },
    ],
    'messages',
  );
  const perSecond = points.map((p, i) => {
    const prev = points[i - 1];
    const seconds = prev ? (t(p) - t(prev)) / 1000 : history.intervalMs / 1000;
    return { t: t(p), v: seconds > 0 ? p.delivered / seconds : null };
  });
  drawChart(byId('chart-throughput'), [{ name: 'delivered/s', values: perSecond }], 'messages per second');
  drawChart(
    byId('chart-latency'),
    [
      { name: 'p50', values: points.map((p) => ({ t: t(p), v: p.latencyP50Ms })) },
      { name: 'p95', values: points.map((p) => ({ t: t(p), v: p.latencyP95Ms })) },
    ],
    'ms',
  );
  // Deliveries are counted from the relay's events: a server without a relay in its process
  // (`mailroom admin`) has none to count, which the charts say rather than show a flat zero.
  const noRelay = state.lastStatus !== null && state.lastStatus.owner === null;
  for (const id of ['chart-throughput', 'chart-latency']) {
    const figure = byId(id);
    let note = figure.querySelector('.note');
    if (noRelay && !note) {
      note = el('p', 'Needs the relay in this process (mailroom relay --admin-port).', {
        class: 'note small muted',
        'data-testid': `${id}-note`,
      });
      figure.append(note);
    } else if (!noRelay && note) {
      note.remove();
    }
  }
}

// ---------------------------------------------------------------- tables

function renderTopics(data) {
  const rows = data.topics.map((topic) => {
    const tr = el('tr', null, { 'data-testid': 'topic-row' });
    tr.append(
      el('td', topic.topic, { class: 'mono' }),
      el('td', fmtNum(topic.backlog), { class: 'num' }),
      el('td', fmtNum(topic.deadLetters), { class: 'num' }),
    );
    return tr;
  });
  byId('topics-table').tBodies[0].replaceChildren(...rows);
  show(byId('topics-empty'), rows.length === 0);
  show(byId('topics-truncated'), Boolean(data.truncated));
  renderTopicFilter(data.topics.filter((tp) => tp.deadLetters > 0).map((tp) => tp.topic));
}

function renderTopicFilter(topics) {
  const select = byId('dl-topic-filter');
  const wanted = ['', ...topics];
  if (state.topicFilter && !wanted.includes(state.topicFilter)) wanted.push(state.topicFilter);
  const current = Array.from(select.options).map((o) => o.value);
  // Rebuilt only when the list changes, so an open drop-down is not closed every 2 s.
  if (wanted.join('\n') !== current.join('\n')) {
    select.replaceChildren(...wanted.map((tp) => el('option', tp === '' ? 'all topics' : tp, { value: tp })));
  }
  select.value = state.topicFilter;
}

function renderRelays(data) {
  const rows = data.relays.map((r) => {
    const tr = el('tr', null, { 'data-testid': 'relay-row' });
    const alive = el('span');
    setBadge(alive, r.alive ? 'alive' : 'gone', r.alive ? 'ok' : 'bad');
    const aliveCell = el('td');
    aliveCell.append(alive);
    const heartbeat = el('td', r.heartbeatAt ? `${fmtAge(ageOf(r.heartbeatAt))} ago` : '–');
    if (r.heartbeatAt) heartbeat.title = r.heartbeatAt;
    tr.append(
      el('td', r.owner, { class: 'mono' }),
      el('td', r.host ?? '–'),
      el('td', r.pid ?? '–'),
      el('td', r.state, { 'data-testid': 'relay-state' }),
      aliveCell,
      heartbeat,
      el('td', fmtNum(r.inFlight), { class: 'num' }),
    );
    return tr;
  });
  byId('relays-table').tBodies[0].replaceChildren(...rows);
  show(byId('relays-empty'), rows.length === 0);
}

function renderDeadLetters(data) {
  state.listed = new Map(data.items.map((d) => [d.id, d]));
  state.deadLetterCount = data.count;
  // A dead letter replayed or purged elsewhere leaves the selection too.
  for (const id of state.selected) if (!state.listed.has(id)) state.selected.delete(id);

  const rows = data.items.map((d) => {
    const tr = el('tr', null, { 'data-testid': 'dl-row', 'data-id': d.id });
    if (state.selected.has(d.id)) tr.classList.add('selected');
    const box = el('input', null, {
      type: 'checkbox',
      'data-testid': 'dl-select',
      'aria-label': `Select dead letter ${d.id}`,
    });
    box.checked = state.selected.has(d.id);
    box.addEventListener('change', () => {
      if (box.checked) state.selected.add(d.id);
      else state.selected.delete(d.id);
      tr.classList.toggle('selected', box.checked);
      updateSelectionButtons();
    });
    const boxCell = el('td');
    boxCell.append(box);
    const died = el('td', `${fmtAge(ageOf(d.deadAt))} ago`);
    died.title = d.deadAt;
    const error = el('td', d.error, { class: 'clip', 'data-testid': 'dl-error' });
    error.title = d.error;
    const preview = el('td', d.preview, { class: 'clip mono' });
    preview.title = `${d.contentType}, ${fmtBytes(d.size)}`;
    const actions = el('td');
    const view = el('button', 'View', {
      type: 'button',
      'data-testid': 'dl-view',
      'aria-label': `View dead letter ${d.id}`,
    });
    view.addEventListener('click', () => openDetail(d.id));
    const replay = el('button', 'Replay', {
      type: 'button',
      'data-testid': 'dl-replay',
      'aria-label': `Replay dead letter ${d.id}`,
    });
    replay.addEventListener('click', () => act('replay', { ids: [d.id] }, [d]));
    const purge = el('button', 'Purge', {
      type: 'button',
      class: 'danger',
      'data-testid': 'dl-purge',
      'aria-label': `Purge dead letter ${d.id}`,
    });
    purge.addEventListener('click', () => act('purge', { ids: [d.id] }, [d]));
    actions.append(view, ' ', replay, ' ', purge);
    tr.append(
      boxCell,
      el('td', d.topic, { class: 'mono' }),
      el('td', d.key ?? '–', { class: 'mono' }),
      el('td', d.attempts, { class: 'num' }),
      died,
      error,
      preview,
      actions,
    );
    return tr;
  });
  // The rows are rebuilt every 2 s: a keyboard user's focus on a row's button or checkbox moves
  // to the same control of the new row instead of falling back to the page.
  const body = byId('dead-letters-table').tBodies[0];
  const focused = document.activeElement;
  const focusRow = focused && body.contains(focused) ? focused.closest('tr') : null;
  const focusAt = focusRow ? [focusRow.dataset.id, focused.dataset.testid] : null;
  body.replaceChildren(...rows);
  if (focusAt) {
    const again = body.querySelector(`tr[data-id="${CSS.escape(focusAt[0])}"] [data-testid="${focusAt[1]}"]`);
    if (again) again.focus();
  }
  show(byId('dead-letters-empty'), rows.length === 0);
  const scope = state.topicFilter ? ` in topic ${state.topicFilter}` : '';
  byId('dl-count').textContent =
    data.count > data.items.length
      ? `showing ${fmtNum(data.items.length)} of ${fmtNum(data.count)}${scope}`
      : `${plural(data.count, 'dead letter')}${scope}`;
  byId('dl-replay-all').textContent = state.topicFilter ? 'Replay all in topic…' : 'Replay all…';
  byId('dl-purge-all').textContent = state.topicFilter ? 'Purge all in topic…' : 'Purge all…';
  byId('dl-replay-all').disabled = data.count === 0;
  byId('dl-purge-all').disabled = data.count === 0;
  updateSelectionButtons();
}

function updateSelectionButtons() {
  const n = state.selected.size;
  byId('dl-replay-selected').disabled = n === 0;
  byId('dl-purge-selected').disabled = n === 0;
  byId('dl-replay-selected').textContent = n > 0 ? `Replay ${n} selected…` : 'Replay selected';
  byId('dl-purge-selected').textContent = n > 0 ? `Purge ${n} selected…` : 'Purge selected';
  const all = byId('dl-select-all');
  all.checked = n > 0 && n === state.listed.size;
  all.indeterminate = n > 0 && n < state.listed.size;
}

// ---------------------------------------------------------------- detail view

async function openDetail(id) {
  const dialog = byId('detail-dialog');
  byId('detail-meta').replaceChildren();
  for (const name of ['detail-error', 'detail-headers', 'detail-payload', 'detail-encoding']) {
    byId(name).textContent = '';
  }
  byId('detail-payload').textContent = 'loading…';
  dialog.dataset.id = id;
  if (!dialog.open) dialog.showModal();
  try {
    const d = await api(withSource(`/api/dead-letters/${encodeURIComponent(id)}`));
    const meta = [
      ['id', d.id],
      ['topic', d.topic],
      ['key', d.key ?? '–'],
      ['type', d.type ?? '–'],
      ['attempts', d.attempts],
      ['content type', d.contentType],
      ['size', fmtBytes(d.size)],
      ['written', d.createdAt],
      ['died', d.deadAt],
    ];
    byId('detail-meta').replaceChildren(
      ...meta.flatMap(([k, v]) => [el('dt', k), el('dd', v, { class: 'mono' })]),
    );
    byId('detail-error').textContent = d.error;
    byId('detail-headers').textContent = JSON.stringify(d.headers, null, 2);
    const { encoding, value } = d.payload;
    byId('detail-encoding').textContent = `(${encoding})`;
    byId('detail-payload').textContent = encoding === 'json' ? JSON.stringify(value, null, 2) : String(value);
  } catch (err) {
    byId('detail-payload').textContent = describeError(err);
  }
}

function closeDetail() {
  const dialog = byId('detail-dialog');
  if (dialog.open) dialog.close();
}

// ---------------------------------------------------------------- replay and purge

/** Shows the confirmation dialog; resolves true on Confirm, false on Cancel or Escape. */
function confirmAction(title, text, consequence, okLabel, danger) {
  const dialog = byId('confirm-dialog');
  byId('confirm-title').textContent = title;
  byId('confirm-text').textContent = text;
  byId('confirm-consequence').textContent = consequence;
  const ok = byId('confirm-ok');
  ok.textContent = okLabel;
  ok.className = danger ? 'primary danger' : 'primary';
  return new Promise((resolve) => {
    const done = (answer) => {
      ok.removeEventListener('click', onOk);
      byId('confirm-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('close', onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onOk = () => done(true);
    const onCancel = () => done(false);
    ok.addEventListener('click', onOk);
    byId('confirm-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('close', onCancel);
    dialog.showModal();
    // A destructive action is never one Enter away.
    byId('confirm-cancel').focus();
  });
}

/**
 * Replays or purges: `body` is { ids } | { topic } | { all: true }; `items` are the listed rows
 * concerned (for the wording), `count` how many the server holds for a topic or all.
 */
async function act(kind, body, items, count) {
  const n = items ? items.length : count;
  const what = plural(n, 'dead letter');
  let scope;
  if (body.ids) {
    const topics = [...new Set(items.map((d) => d.topic))];
    scope = `${what} of topic${topics.length === 1 ? '' : 's'} ${topics.join(', ')}`;
    if (n === 1) scope += ` (id ${items[0].id})`;
  } else if (body.topic) {
    scope = `all ${what} of topic ${body.topic}`;
  } else {
    scope = `all ${what}, of every topic`;
  }
  if (state.multiSource && state.source) scope += ` in source ${state.source}`;
  const replay = kind === 'replay';
  const consequence = replay
    ? 'They go back into the outbox, due now, with their attempts reset and their ids kept; the relay delivers them again.'
    : 'They are deleted for good. This cannot be undone.';
  const more = body.ids ? '' : ' Any that die while this runs are left alone.';
  const confirmed = await confirmAction(
    replay ? 'Replay dead letters' : 'Purge dead letters',
    `${replay ? 'Replay' : 'Purge'} ${scope}?`,
    consequence + more,
    replay ? `Replay ${what}` : `Purge ${what}`,
    !replay,
  );
  if (!confirmed) return;
  const errorNode = byId('action-error');
  const resultNode = byId('action-result');
  show(errorNode, false);
  show(resultNode, false);
  const payload = { ...body };
  if (state.multiSource && state.source) payload.source = state.source;
  try {
    const res = await api(`/api/dead-letters/${kind}`, payload);
    const done = replay ? res.replayed : res.purged;
    resultNode.textContent = `${replay ? 'Replayed' : 'Purged'} ${plural(done, 'dead letter')}.`;
    show(resultNode, true);
    for (const id of res.ids ?? []) state.selected.delete(id);
    closeDetail();
  } catch (err) {
    errorNode.textContent = describeError(err);
    errorNode.dataset.code = err instanceof ApiError ? err.code : 'network';
    show(errorNode, true);
  }
  await refresh();
}

function selectedItems() {
  return [...state.selected].map((id) => state.listed.get(id)).filter(Boolean);
}

function allBody() {
  return state.topicFilter ? { topic: state.topicFilter } : { all: true };
}

// ---------------------------------------------------------------- polling

function renderConnection() {
  const conn = byId('connection');
  const last = byId('last-updated');
  if (state.failing) {
    setBadge(conn, 'connection lost', 'bad', 'retrying every 2 s');
    last.textContent = state.lastOk
      ? `last update ${state.lastOk.toLocaleTimeString('en-GB')}, retrying`
      : 'retrying';
  } else if (state.refused) {
    setBadge(conn, 'no access', 'warn', 'the server wants the admin token for its API');
    last.textContent = state.lastOk ? `last update ${state.lastOk.toLocaleTimeString('en-GB')}` : '';
  } else {
    setBadge(conn, 'live', 'ok', `refreshing every ${POLL_MS / 1000} s`);
    last.textContent = state.lastOk ? `updated ${state.lastOk.toLocaleTimeString('en-GB')}` : '';
  }
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const asked = Date.now();
    const status = await api('/api/status');
    state.skewMs = new Date(status.time).getTime() - (asked + Date.now()) / 2;
    state.lastStatus = status;
    renderStatus(status);
    const sourceName = state.source;
    const [history, topics, relays, dead] = await Promise.all([
      api('/api/history'),
      api(withSource('/api/topics')),
      api(withSource('/api/relays')),
      api(withSource('/api/dead-letters', { topic: state.topicFilter, limit: String(DEAD_LETTER_LIMIT) })),
    ]);
    renderHistory(history, sourceName);
    renderTopics(topics);
    renderRelays(relays);
    renderDeadLetters(dead);
    state.failing = false;
    state.refused = false;
    state.lastOk = new Date();
    document.body.dataset.loaded = 'true';
  } catch (err) {
    if (err instanceof ApiError) {
      // The server is there but refused or failed: say so where the data would be.
      const node = byId('source-error');
      node.textContent = describeError(err);
      show(node, true);
      state.failing = false;
      state.refused = err.status === 401 || err.status === 403;
    } else {
      state.failing = true;
    }
  } finally {
    state.busy = false;
    renderConnection();
  }
}

function schedule() {
  window.clearTimeout(state.timer);
  state.timer = window.setTimeout(async () => {
    await refresh();
    schedule();
  }, POLL_MS);
}

// ---------------------------------------------------------------- wiring

function renderTokenState() {
  byId('token-state').textContent = token()
    ? 'A token is set for this tab (sessionStorage), sent as a Bearer header.'
    : 'No token set. Kept in this tab only (sessionStorage), sent as a Bearer header.';
}

function wire() {
  byId('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = byId('token-input');
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    input.value = '';
    renderTokenState();
    show(byId('action-error'), false);
    refresh();
  });
  byId('token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    byId('token-input').value = '';
    renderTokenState();
  });
  byId('source-select').addEventListener('change', (event) => {
    state.source = event.target.value;
    state.selected.clear();
    state.topicFilter = '';
    refresh();
  });
  byId('dl-topic-filter').addEventListener('change', (event) => {
    state.topicFilter = event.target.value;
    state.selected.clear();
    refresh();
  });
  byId('dl-select-all').addEventListener('change', (event) => {
    if (event.target.checked) for (const id of state.listed.keys()) state.selected.add(id);
    else state.selected.clear();
    for (const row of byId('dead-letters-table').tBodies[0].rows) {
      const checked = state.selected.has(row.dataset.id);
      row.classList.toggle('selected', checked);
      const box = row.querySelector('input[type="checkbox"]');
      if (box) box.checked = checked;
    }
    updateSelectionButtons();
  });
  byId('dl-replay-selected').addEventListener('click', () => {
    const items = selectedItems();
    if (items.length > 0) act('replay', { ids: items.map((d) => d.id) }, items);
  });
  byId('dl-purge-selected').addEventListener('click', () => {
    const items = selectedItems();
    if (items.length > 0) act('purge', { ids: items.map((d) => d.id) }, items);
  });
  byId('dl-replay-all').addEventListener('click', () =>
    act('replay', allBody(), null, state.deadLetterCount),
  );
  byId('dl-purge-all').addEventListener('click', () => act('purge', allBody(), null, state.deadLetterCount));
  byId('detail-close').addEventListener('click', closeDetail);
  const fromDetail = (kind) => {
    const id = byId('detail-dialog').dataset.id;
    const item = state.listed.get(id) ?? { id, topic: '(unknown)' };
    closeDetail();
    act(kind, { ids: [id] }, [item]);
  };
  byId('detail-replay').addEventListener('click', () => fromDetail('replay'));
  byId('detail-purge').addEventListener('click', () => fromDetail('purge'));
}

wire();
renderTokenState();
refresh().then(schedule);
