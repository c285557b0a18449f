// The console half of the end-to-end test (web/e2e.mjs records first): in Chromium, the
// Recordings list is filtered (a filter that must exclude a session does), a replay is opened
// and a marker clicked (the player must then show that moment's page), the second person is
// deleted on the Privacy page with the admin token (the list and the bytes must go), and every
// page and endpoint refuses a missing or wrong token. Screenshots of each page go to `shots`.
import fs from 'node:fs';
import path from 'node:path';

const check = (cond, what) => { if (!cond) throw new Error(`check failed: ${what}`); };

// The text of the player's iframe (the replayed page).
async function playerText(page) {
  let text = '';
  for (const f of page.frames()) {
    if (f === page.mainFrame()) continue;
    text += await f.evaluate(() => (document.body ? document.body.innerText : '')).catch(() => '');
  }
  return text;
}

async function waitFor(what, fn, tries = 60, ms = 250, page = null) {
  for (let i = 0; i < tries; i++) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, ms));
  }
  const seen = page ? ` (status: ${await page.textContent('#status').catch(() => '')}; player: ${(await playerText(page)).slice(0, 300)})` : '';
  throw new Error(`timed out waiting for ${what}${seen}`);
}

async function rowsOf(page) {
  return page.$$eval('#sessions tbody tr[data-session]', (trs) => trs.map((t) => t.dataset.session));
}

// A missing or wrong token gets 401 from every page and endpoint, in a browser with no cookie.
async function refusals(browser, base, first) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const sid = encodeURIComponent(first.session_id);
  const paths = ['/', '/privacy', '/storage', `/replay/7/${sid}`, '/assets/console.js', '/assets/rrweb-player/index.js',
    '/api/sessions?team=7', `/api/sessions/7/${sid}/events?from_ms=0`, `/api/sessions/7/${sid}/markers`, '/api/teams',
    '/api/storage', '/api/deletions', '/api/deletions/1'];
  const seen = {};
  for (const p of paths) {
    for (const suffix of ['', `${p.includes('?') ? '&' : '?'}token=wrong`]) {
      const r = await page.goto(`${base}${p}${suffix}`);
      seen[`${p}${suffix}`] = r.status();
    }
  }
  const del = await page.evaluate(async (u) => (await fetch(u, { method: 'POST', headers: { authorization: 'Bearer wrong' }, body: '{"team":7,"person":"e2e-person-1"}' })).status, `${base}/api/deletions`);
  seen['POST /api/deletions'] = del;
  await ctx.close();
  return seen;
}

export async function driveConsole({ browser, serverPort, readToken, adminToken, shots, first, second }) {
  fs.mkdirSync(shots, { recursive: true });
  const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const base = `http://replay.e2e.test:${serverPort}`;
  const api = async (p) => (await fetch(`http://127.0.0.1:${serverPort}${p}`, { headers: { authorization: `Bearer ${readToken}` } })).json();
  check(second, 'the second session arrived');
  // The first session spans both pages once the second page's batch has arrived.
  await waitFor('both pages in the first session', async () => {
    const { sessions } = await api(`/api/sessions?team=7&person=e2e-person-1`);
    return sessions.some((s) => s.session_id === first.session_id && s.urls.length >= 2);
  }, 80, 500);
  const out = { refusals: await refusals(browser, base, first) };

  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  out.pageErrors = errors;
  // Recordings: the token once in the URL, then the cookie.
  let r = await page.goto(`${base}/?team=7&token=${readToken}`);
  check(r.status() === 200, 'recordings page with ?token=');
  await page.waitForSelector('#sessions tbody tr[data-session]');
  out.listed = await rowsOf(page);
  check(!page.url().includes('token='), 'the token leaves the address bar');
  await shot(page, 'recordings');
  // A filter that must exclude the second person's session (no click in it).
  await page.fill('input[name=min_clicks]', '2');
  await page.click('#apply');
  await waitFor('the filtered list', async () => !(await rowsOf(page)).includes(second.session_id));
  out.filtered = await rowsOf(page);
  await shot(page, 'recordings-filtered');
  // A person's sessions, one click away.
  await page.click(`tr[data-session="${first.session_id}"] a.person`);
  await page.waitForSelector(`tr[data-session="${first.session_id}"]`);
  out.personList = await rowsOf(page);

  // Replay: open it from the list, seek by a marker.
  const seeks = [];
  page.on('request', (q) => { if (q.url().includes('/events?from_ms=')) seeks.push(q.url()); });
  await page.click(`tr[data-session="${first.session_id}"] a.replay-link`);
  await page.waitForSelector('#markers button.marker');
  await waitFor('the player', async () => (await playerText(page)).includes('canary-heading-7f3a'), 80);
  out.markers = await page.$$eval('#markers button.marker', (bs) => bs.map((b) => ({ kind: b.dataset.kind, ts: Number(b.dataset.ts), text: b.textContent })));
  out.panel = await page.textContent('#panel');
  const views = out.markers.filter((m) => m.kind === 'page_view');
  const page2 = views.find((m) => m.text.includes('page2'));
  const home = views.find((m) => m.text.includes('index.html'));
  check(page2 && home, `page-view markers for both pages: ${JSON.stringify(views)}`);
  await page.click(`#markers button.marker[data-ts="${page2.ts}"][data-kind=page_view]`);
  await waitFor('the seek to page two', async () => (await page.getAttribute('#player', 'data-at')) === String(page2.ts));
  out.atPage2 = await waitFor('page two in the player', async () => { const t = await playerText(page); return t.includes('Page Two') && t; }, 40, 250, page);
  await shot(page, 'replay');
  await page.click(`#markers button.marker[data-ts="${home.ts}"][data-kind=page_view]`);
  await waitFor('the seek home', async () => (await page.getAttribute('#player', 'data-at')) === String(home.ts));
  out.atHome = await waitFor('home in the player', async () => { const t = await playerText(page); return t.includes('Home') && t; }, 40, 250, page);
  out.seeks = seeks;

  // Privacy: delete the second person with the admin token, through the confirmation step.
  const before = await api('/api/storage');
  await page.goto(`${base}/privacy`);
  await page.waitForSelector('#team option[value="7"]', { state: 'attached' });
  await page.selectOption('#team', '7');
  await page.selectOption('select[name=kind]', 'person');
  await page.fill('input[name=target]', 'e2e-person-2');
  await page.fill('input[name=admin]', adminToken);
  await page.click('#review');
  await page.waitForSelector('#confirm:not([hidden])');
  out.confirmText = await page.textContent('#confirm-text');
  await shot(page, 'privacy-confirm');
  await page.click('#confirm-yes');
  const done = await waitFor('the receipt', () => page.$('#requests tr[data-status=done]'), 120);
  out.receipt = await done.textContent();
  out.statusLine = await waitFor('the status line to say done', async () => { const t = await page.textContent('#delete-status'); return /: done$/.test(t) && t; });
  out.retention = await page.textContent('#retention');
  await shot(page, 'privacy');
  const after = await api('/api/storage');
  out.bytes = { before: before.stats.stored_bytes, after: after.stats.stored_bytes, sessionsBefore: before.all.sessions, sessionsAfter: after.all.sessions };

  await page.goto(`${base}/?team=7`);
  await page.waitForSelector('#sessions tbody tr');
  out.afterDelete = await rowsOf(page);
  await page.goto(`${base}/storage`);
  await page.waitForSelector('#heaviest tbody tr');
  await page.waitForSelector('#projection svg');
  out.storageText = (await page.textContent('main')).slice(0, 3000);
  await shot(page, 'storage');
  await ctx.close();
  return out;
}
