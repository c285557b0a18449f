// End-to-end test driver (run by tests/e2e.rs): the unmodified posthog-js SDK records a small
// page in Debian's Chromium and sends to a running `replaystore serve`; then the console is
// driven in the same browser (console.mjs): the list filtered, a replay opened and seeked by
// a marker, a person deleted with the admin token, every page refused without the token.
//
// usage: node web/e2e.mjs <server port> <read token> <admin token> <screenshot dir>
// prints one JSON line: {"session": ..., "replayText": ..., "console": ...}
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { driveConsole } from './console.mjs';

const [serverPort, readToken, adminToken, shots] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = fs.readFileSync(path.join(here, 'node_modules/posthog-js/dist/array.full.js'));
// posthog-js turns some capture off on localhost: the page and the server get real-looking names.
const apiHost = `http://replay.e2e.test:${serverPort}`;

const page = (title, next) => `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>
<script src="/posthog.js"></script>
<script>
  posthog.init('phc_e2e_token', {
    api_host: '${apiHost}',
    persistence: 'localStorage', // one session across the two pages
    autocapture: false,
    capture_pageview: true,
    disable_session_recording: false,
    session_recording: { maskAllInputs: true },
  });
  posthog.identify(new URLSearchParams(location.search).get('who') || 'e2e-person-1');
</script></head><body>
<h1>E2E Shop ${title} canary-heading-7f3a</h1>
<form onsubmit="return false">
  <input id="name" type="text" placeholder="name">
  <input id="password" type="password" placeholder="password">
  <button id="buy" type="button" onclick="document.getElementById('out').textContent='bought ' + Date.now()">Buy</button>
</form>
<p id="out"></p>
<ul>${Array.from({ length: 80 }, (_, i) => `<li>item ${i}</li>`).join('')}</ul>
<a id="next" href="${next}">next page</a>
</body></html>`;

const site = http.createServer((req, res) => {
  if (req.url === '/posthog.js') {
    res.writeHead(200, { 'content-type': 'application/javascript' });
    return res.end(sdk);
  }
  const html = req.url.startsWith('/page2') ? page('Page Two', '/index.html') : page('Home', '/page2.html');
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(html);
});
await new Promise((r) => site.listen(0, '127.0.0.1', r));
const sitePort = site.address().port;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    '--disable-blink-features=AutomationControlled',
    '--host-resolver-rules=MAP shop.e2e.test 127.0.0.1, MAP replay.e2e.test 127.0.0.1',
  ],
});
// Present as ordinary Chrome: posthog-js ignores browsers that look like bots.
const context = await browser.newContext({
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
});
await context.addInitScript(() => Object.defineProperty(navigator, 'webdriver', { get: () => false }));
const tab = await context.newPage();
await tab.goto(`http://shop.e2e.test:${sitePort}/index.html`);
await tab.waitForTimeout(1500);
await tab.click('#name');
await tab.keyboard.type('Alice Typed-Secret-Name', { delay: 20 });
await tab.click('#password');
await tab.keyboard.type('hunter2-typed-password', { delay: 20 });
await tab.click('#buy');
await tab.mouse.wheel(0, 1500);
await tab.waitForTimeout(800);
await tab.click('#next');
await tab.waitForLoadState('load');
await tab.waitForTimeout(1500);
await tab.click('#buy');
await tab.mouse.wheel(0, 800);
await tab.waitForTimeout(3500); // posthog-js sends every ~2 s

// Wait until the server has the session.
const api = (p) => fetch(`http://127.0.0.1:${serverPort}${p}`, { headers: { authorization: `Bearer ${readToken}` } });
let session = null;
for (let i = 0; i < 60 && !session; i++) {
  const list = (await (await api('/api/sessions?team=7')).json()).sessions;
  session = list.find((s) => s.event_count >= 20 && s.person === 'e2e-person-1') || null;
  if (!session) {
    // Keep the page active: posthog-js sends what it buffered every ~2 s.
    await tab.mouse.move(100 + (i % 10) * 40, 200 + (i % 7) * 30);
    await tab.waitForTimeout(500);
  }
}
if (!session) {
  console.log(JSON.stringify({ error: 'no session arrived at the server' }));
  await browser.close();
  site.close();
  process.exit(1);
}

// The replay page plays it: the player's iframe shows the recorded page's text.
const replay = await context.newPage();
await replay.goto(`http://replay.e2e.test:${serverPort}/replay/7/${session.session_id}?token=${readToken}`);
let replayText = '';
for (let i = 0; i < 40 && !replayText.includes('canary-heading-7f3a'); i++) {
  await replay.waitForTimeout(500);
  for (const f of replay.frames()) {
    if (f === replay.mainFrame()) continue;
    replayText += await f.evaluate(() => document.body ? document.body.innerText : '').catch(() => '');
  }
}

// A second person's short visit without a click: the session a filter must exclude, and the
// person the Privacy page deletes.
const other = await browser.newContext({ userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36' });
await other.addInitScript(() => Object.defineProperty(navigator, 'webdriver', { get: () => false }));
const otherTab = await other.newPage();
await otherTab.goto(`http://shop.e2e.test:${sitePort}/index.html?who=e2e-person-2`);
let second = null;
for (let i = 0; i < 60 && !second; i++) {
  await otherTab.mouse.move(100 + (i % 10) * 40, 200 + (i % 7) * 30);
  await otherTab.waitForTimeout(500);
  const list = (await (await api('/api/sessions?team=7')).json()).sessions;
  second = list.find((s) => s.person === 'e2e-person-2' && s.event_count >= 3) || null;
}
await other.close();
let consoleResult;
try {
  consoleResult = await driveConsole({ browser, serverPort, readToken, adminToken, shots, first: session, second });
} catch (e) {
  consoleResult = { error: String(e && e.stack || e) };
}
console.log(JSON.stringify({ session, second, replayText: replayText.slice(0, 2000), console: consoleResult }));
await browser.close();
site.close();
