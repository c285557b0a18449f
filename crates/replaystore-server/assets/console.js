// The replaystore console: each page's script, filled from the JSON endpoints a script would
// use (/api/...). The read token travels in a cookie the server set when the page was opened
// with ?token=; it is taken out of the address bar here so it does not linger in history.
'use strict';
(() => {
  const url = new URL(location.href);
  if (url.searchParams.has('token')) {
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
  }
})();

const $ = (sel) => document.querySelector(sel);
const data = document.body.dataset;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, { credentials: 'same-origin', ...options });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  return (r.headers.get('content-type') || '').startsWith('application/json') ? r.json() : r.text();
}

const fmt = {
  bytes(n) {
    if (n == null) return '';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
  },
  duration(ms) {
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
  },
  date(ms) {
    return ms ? new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }) : '';
  },
  offset(ms) { return fmt.duration(Math.max(0, ms)); },
};

function cell(text, cls) { return el('td', cls ? { class: cls } : {}, text); }
function num(text) { return cell(String(text), 'num'); }

async function teamSelect(select, current) {
  const { teams } = await api('/api/teams');
  if (!teams.some((t) => String(t.team) === current)) teams.push({ team: current });
  for (const t of teams) select.append(el('option', { value: t.team }, `team ${t.team}`));
  select.value = current;
  return teams;
}

// --- Recordings ------------------------------------------------------------------------
function toLocalInput(ms) {
  const d = new Date(Number(ms));
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

async function recordings() {
  const form = $('#filters');
  const params = new URLSearchParams(location.search);
  await teamSelect($('#team'), params.get('team') || data.team);
  for (const [k, v] of params) {
    const input = form.elements[k];
    if (!input) continue;
    if (input.type === 'checkbox') input.checked = v !== '' && v !== '0' && v !== 'false';
    else input.value = v;
  }
  if (params.get('from_ms')) form.elements.from.value = toLocalInput(params.get('from_ms'));
  if (params.get('to_ms')) form.elements.to.value = toLocalInput(params.get('to_ms'));
  // The query this form asks: the page's address holds it, so a filtered list is a link.
  const query = () => {
    const q = new URLSearchParams();
    for (const input of form.elements) {
      if (!input.name || input.name === 'from' || input.name === 'to') continue;
      if (input.type === 'checkbox') { if (input.checked) q.set(input.name, '1'); } else if (input.value !== '') q.set(input.name, input.value);
    }
    if (form.elements.from.value) q.set('from_ms', new Date(form.elements.from.value).getTime());
    if (form.elements.to.value) q.set('to_ms', new Date(form.elements.to.value).getTime());
    return q;
  };
  const cursors = [null];
  const load = async () => {
    const q = query();
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set('cursor', cursor);
    $('#status').textContent = 'loading…';
    try {
      // The server put the first page in the HTML; later pages are fetched.
      const inline = $('#first-page');
      const page = inline ? JSON.parse(inline.textContent) : await api(`/api/sessions?${q}`);
      if (inline) inline.remove();
      render(page.sessions, q.get('team'));
      $('#status').textContent = `${page.sessions.length} session(s) on this page`;
      $('#pageno').textContent = `page ${cursors.length}`;
      $('#prev').disabled = cursors.length === 1;
      $('#next').disabled = !page.next_cursor;
      $('#next').onclick = () => { cursors.push(page.next_cursor); load(); };
    } catch (e) {
      $('#status').textContent = `error: ${e.message}`;
    }
  };
  $('#prev').onclick = () => { cursors.pop(); load(); };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    cursors.length = 1;
    history.replaceState(null, '', `/?${query()}`);
    load();
  });
  await load();
}

function render(rows, team) {
  const body = $('#sessions tbody');
  body.replaceChildren();
  for (const s of rows) {
    const person = el('a', { href: `/?team=${team}&person=${encodeURIComponent(s.person)}`, class: 'person', title: 'this person\'s sessions' }, s.person || '(anonymous)');
    const replay = el('a', { href: `/replay/${s.team}/${encodeURIComponent(s.session_id)}`, class: 'replay-link', title: s.session_id }, 'Watch');
    body.append(el('tr', { 'data-session': s.session_id },
      cell(fmt.date(s.first_ts_ms)), el('td', {}, person), cell(s.first_url || '', 'url'),
      num(fmt.duration(s.duration_ms)), num(fmt.duration(s.active_milliseconds)),
      num(s.click_count), num(s.keypress_count),
      cell(String(s.console_error_count), s.console_error_count ? 'num bad' : 'num'),
      cell(String(s.rage_click_count), s.rage_click_count ? 'num bad' : 'num'),
      num(fmt.bytes(s.size)), el('td', {}, replay)));
  }
  if (!rows.length) body.append(el('tr', {}, el('td', { colspan: 11, class: 'muted' }, 'No recordings match.')));
}

// --- Replay ----------------------------------------------------------------------------
let player = null;

// Plays the session from the last full snapshot at or before `ms` (the server's ranged
// read), positioned at `ms`: a long session starts at once wherever it is opened.
async function playFrom(team, session, ms) {
  const q = ms == null ? '' : `?from_ms=${Math.floor(ms)}`;
  const text = await api(`/api/sessions/${team}/${encodeURIComponent(session)}/events${q}`);
  const events = text.split('\n').filter((l) => l).map((l) => JSON.parse(l));
  if (!events.length) throw new Error('no events');
  const target = $('#player');
  if (player && player.$destroy) player.$destroy();
  target.replaceChildren();
  const Player = window.rrwebPlayer.default || window.rrwebPlayer;
  const width = Math.max(480, Math.min(target.clientWidth || 960, 1100));
  player = new Player({ target, props: { events, autoPlay: ms == null, width, height: Math.round(width * 0.56) } });
  const base = events[0].timestamp;
  // A page view's marker is its meta event, a moment before the page's full snapshot: show
  // at least up to the snapshot, or the player would still be blank.
  const snapshot = events.find((e) => e.type === 2);
  const at = Math.max(ms ?? 0, snapshot ? snapshot.timestamp : base);
  if (ms != null) player.goto(at - base, false);
  $('#status').textContent = ms == null
    ? `playing ${events.length} events`
    : `at ${fmt.date(ms)}: ${events.length} events from the full snapshot of ${fmt.date(base)}`;
  target.dataset.at = ms == null ? '' : String(ms);
}

function panel(s, t) {
  const dl = el('dl', {});
  const row = (k, v) => dl.append(el('dt', {}, k), el('dd', {}, v));
  row('Person', el('a', { href: `/?team=${s.team}&person=${encodeURIComponent(s.person)}` }, s.person || '(anonymous)'));
  row('Start', fmt.date(s.first_ts_ms));
  row('Duration', fmt.duration(s.duration_ms));
  row('Active', fmt.duration(s.active_milliseconds));
  row('Clicks', String(s.click_count));
  row('Keypresses', String(s.keypress_count));
  row('Console errors', String(s.console_error_count));
  row('Console warnings', String(s.console_warn_count));
  row('Rage clicks', String(s.rage_click_count));
  row('Viewport', s.viewport_width ? `${s.viewport_width}×${s.viewport_height}` : '');
  row('Size', `${fmt.bytes(s.size)} sent, ${fmt.bytes(s.stored_bytes)} stored`);
  const windows = el('ul', {}, ...t.windows.map((w) => el('li', {}, `${w.window_id || '(no id)'}: ${fmt.offset(w.first_ts_ms - t.start_ms)}–${fmt.offset(w.last_ts_ms - t.start_ms)}`)));
  const pages = el('ol', { id: 'pages' }, ...t.pages.map((p) => el('li', {}, el('span', { class: 'muted' }, `${fmt.offset(p.ts_ms - t.start_ms)} `), p.url)));
  $('#panel').replaceChildren(el('h2', {}, 'Session'), dl, el('h2', {}, `Windows (${t.windows.length})`), windows, el('h2', {}, `Pages visited (${t.pages.length})`), pages);
}

function markers(team, session, t) {
  const span = Math.max(1, t.end_ms - t.start_ms);
  const bar = $('#markerbar');
  const list = $('#markers');
  t.markers.forEach((m, i) => {
    const seek = () => playFrom(team, session, m.ts_ms).catch((e) => { $('#status').textContent = `error: ${e.message}`; });
    const label = `${m.kind.replace('_', ' ')} at ${fmt.offset(m.ts_ms - t.start_ms)}${m.label ? `: ${m.label}` : ''}`;
    bar.append(el('button', { class: `m-${m.kind}`, style: `left:${((m.ts_ms - t.start_ms) / span) * 100}%`, title: label, onclick: seek, 'data-kind': m.kind, 'data-ts': m.ts_ms }));
    list.append(el('li', {}, el('button', { class: 'marker', 'data-kind': m.kind, 'data-index': i, 'data-ts': m.ts_ms, onclick: seek }, label)));
  });
  if (t.markers_dropped) list.append(el('li', { class: 'muted' }, `${t.markers_dropped} more not shown`));
}

async function replay() {
  const { team, session } = data;
  $('#title').textContent = `Session ${session}`;
  try {
    const { session: s, timeline: t } = await api(`/api/sessions/${team}/${encodeURIComponent(session)}/markers`);
    panel(s, t);
    markers(team, session, t);
    await playFrom(team, session, null);
  } catch (e) {
    $('#status').textContent = `error: ${e.message}`;
  }
}

// --- Privacy ---------------------------------------------------------------------------
function receipt(item) {
  const { request: r, status: st } = item;
  const done = st.status === 'done';
  return el('tr', { 'data-id': r.id, 'data-status': st.status },
    num(r.id), num(r.team), cell(`${r.kind} ${r.target}`), cell(st.status, done ? '' : 'bad'),
    cell(fmt.date(st.requested_ms)), cell(done ? fmt.date(st.completed_ms) : ''),
    num(done ? st.sessions_removed : ''), num(done ? fmt.bytes(st.bytes_removed) : ''), num(done ? st.segments_rewritten : ''));
}

// The request this page made last: its status line follows the table until it is done.
let watchedRequest = null;

async function refreshRequests() {
  const { requests, pending } = await api('/api/deletions');
  const seen = new Set(requests.map((x) => x.request.id));
  const all = requests.concat(pending.filter((x) => !seen.has(x.request.id)));
  const watched = all.find((x) => x.request.id === watchedRequest);
  if (watched) $('#delete-status').textContent = `Request ${watched.request.id}: ${watched.status.status}`;
  const body = $('#requests tbody');
  body.replaceChildren(...all.map(receipt));
  if (!all.length) body.append(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'No deletion requests.')));
  return all.some((x) => x.status.status === 'pending');
}

async function pollRequests() {
  while (await refreshRequests().catch(() => false)) await new Promise((r) => setTimeout(r, 1000));
}

async function privacy() {
  const teams = await teamSelect($('#team'), data.team);
  const { default_retention_days: def } = await api('/api/teams');
  $('#retention tbody').replaceChildren(...teams.map((t) => el('tr', {}, cell(`team ${t.team}`), cell(`${t.retention_days ?? def} days`))),
    el('tr', {}, cell('any other team', 'muted'), cell(`${def} days`)));
  const form = $('#delete-form');
  if (data.admin !== 'true') {
    form.querySelector('button').disabled = true;
    $('#delete-status').textContent = 'Deletions are off: start the server with --admin-token.';
  }
  let ask = null;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    ask = { team: Number(f.team.value), [f.kind.value]: f.target.value.trim() };
    let what = `${f.kind.value} “${ask[f.kind.value]}” in team ${ask.team}`;
    if (f.kind.value === 'person') {
      const page = await api(`/api/sessions?team=${ask.team}&person=${encodeURIComponent(ask.person)}&limit=1000`);
      const bytes = page.sessions.reduce((n, s) => n + s.stored_bytes, 0);
      what += `: ${page.sessions.length}${page.next_cursor ? '+' : ''} recording(s), ${fmt.bytes(bytes)} stored`;
    }
    $('#confirm-text').textContent = `Permanently delete every recording of ${what}? This cannot be undone.`;
    $('#confirm').hidden = false;
  });
  $('#confirm-no').onclick = () => { $('#confirm').hidden = true; ask = null; };
  $('#confirm-yes').onclick = async () => {
    $('#confirm').hidden = true;
    try {
      const made = await api('/api/deletions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${form.elements.admin.value}` },
        body: JSON.stringify(ask),
      });
      $('#delete-status').textContent = `Request ${made.request.id}: ${made.status.status}`;
      watchedRequest = made.request.id;
      form.elements.admin.value = '';
      pollRequests();
    } catch (e) {
      $('#delete-status').textContent = `refused: ${e.message}`;
    }
  };
  pollRequests();
}

// --- Storage ---------------------------------------------------------------------------
function histogram(d) {
  const top = Math.max(1, ...d.histogram.map(([, n]) => n));
  return el('div', { class: 'bars hist', title: 'sessions per stored size class' },
    ...d.histogram.map(([upto, n]) => el('div', { style: `height:${(n / top) * 100}%`, title: `${n} session(s) up to ${fmt.bytes(upto)}` }, el('span', {}, `≤${fmt.bytes(upto)}`))));
}

// What `replaystore cost` draws: stored bytes growing by a day's recordings until the oldest
// reach their retention, flat from then on; priced per GB-month.
function projection(perSession) {
  const f = $('#projection-form').elements;
  const perDay = Number(f.per_day.value) * Number(f.rate.value) * perSession;
  const days = Math.max(1, Number(f.days.value));
  const steady = perDay * days;
  const price = Number(f.price.value);
  const span = Math.ceil(days * 1.5);
  const [w, h, pad] = [640, 260, 50];
  const x = (d) => pad + (d / span) * (w - 2 * pad);
  const y = (b) => h - pad - (b / Math.max(1, steady)) * (h - 2 * pad);
  const pts = [];
  for (let d = 0; d <= span; d++) pts.push(`${x(d).toFixed(1)},${y(perDay * Math.min(d, days)).toFixed(1)}`);
  const gb = steady / 1e9;
  $('#projection').innerHTML = `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" xmlns="http://www.w3.org/2000/svg">
<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#888"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${h - pad}" stroke="#888"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="${pts.join(' ')}"/>
<text x="${pad}" y="${h - pad + 18}" font-size="12">day 0</text><text x="${x(days) - 30}" y="${h - pad + 18}" font-size="12">day ${days} (retention)</text>
<text x="4" y="${y(steady) - 4}" font-size="12">${gb.toFixed(1)} GB · $${(gb * price).toFixed(2)}/month</text></svg>`;
  $('#projection-text').textContent = `At ${fmt.bytes(perSession)} per session, the store grows by ${(perDay / 1e9).toFixed(2)} GB a day and levels off at ${gb.toFixed(1)} GB after ${days} days: $${(gb * price).toFixed(2)} a month at $${price} per GB-month.`;
}

async function storage() {
  const r = await api('/api/storage');
  const st = r.stats;
  const kv = (table, rows) => $(table).replaceChildren(...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), num(v))));
  const rows = [['Sessions', st.sessions], ['Chunks', st.chunks], ['Sent (raw)', fmt.bytes(st.raw_bytes)], ['Stored', fmt.bytes(st.stored_bytes)],
    ['Compression ratio', st.ratio.toFixed(2)], ['Bytes per session (mean, footers included)', fmt.bytes(st.bytes_per_session)],
    ['Sessions p50 / p90 / p99 / max', [r.all.p50, r.all.p90, r.all.p99, r.all.max].map(fmt.bytes).join(' / ')],
    ['Segments (sealed)', `${st.segments} (${st.sealed_segments})`]];
  // Hot (as ingested) vs regrouped (compacted per session): shown when the engine reports it.
  for (const [k, v] of Object.entries(st)) if (/regroup/.test(k)) rows.push([k.replace(/_/g, ' '), /bytes/.test(k) ? fmt.bytes(v) : v]);
  kv('#totals', rows);
  $('#histogram').replaceChildren(histogram(r.all));
  const dist = (d) => [num(d.sessions), num(fmt.bytes(d.stored_bytes)), num(fmt.bytes(d.mean)), num(fmt.bytes(d.p50))];
  $('#by-team tbody').replaceChildren(...r.teams.map((t) => el('tr', {}, cell(`team ${t.team}`), cell(`${t.retention_days} days`), ...dist(t), num(fmt.bytes(t.p90)), num(fmt.bytes(t.p99)), num(fmt.bytes(t.max)))));
  $('#by-lane tbody').replaceChildren(...r.lanes.map((l) => el('tr', {}, cell(`${l.retention_days} days`), cell(l.teams.join(', ')), ...dist(l), num(fmt.bytes(l.p99)))));
  const usage = [['Segment files on disk', fmt.bytes(st.bytes_on_disk)]];
  if (r.disk) usage.push(['Disk size', fmt.bytes(r.disk.total_bytes)], ['Disk free', `${fmt.bytes(r.disk.available_bytes)} (${((r.disk.available_bytes / r.disk.total_bytes) * 100).toFixed(0)}%)`]);
  usage.push(['Segments only in the bucket', st.remote_segments], ['Bucket bytes', fmt.bytes(st.bytes_remote)]);
  if (r.remote) usage.push(['Bucket', r.remote.url], ['Uploads in progress', r.remote.uploading], ['Objects to delete', r.remote.doomed]);
  kv('#usage', usage);
  $('#heaviest tbody').replaceChildren(...r.heaviest.map((s) => el('tr', {},
    el('td', {}, el('a', { href: `/replay/${s.team}/${encodeURIComponent(s.session_id)}` }, s.session_id)), num(s.team), cell(s.person),
    num(fmt.duration(s.duration_ms)), num(fmt.bytes(s.stored_bytes)), num(fmt.bytes(s.raw_bytes)), num(s.chunk_count))));
  const lane = r.teams[0];
  if (lane) $('#projection-form').elements.days.value = lane.retention_days;
  const perSession = st.bytes_per_session || r.all.mean || 0;
  $('#projection-form').addEventListener('input', () => projection(perSession));
  projection(perSession);
}

({ recordings, replay, privacy, storage })[data.page]?.().catch?.((e) => {
  const s = document.querySelector('#status') || document.querySelector('main');
  s.append(` error: ${e.message}`);
});
