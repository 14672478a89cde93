// Drives the bridge's dashboard (/dashboard) in headless Chromium as an
// operator would, against a running bridge with api.token set and a stream
// live on PATH.
//
// Setup:  npm ci --prefix test/browser   (see watch.js)
// Usage:  DASHBOARD_TOKEN=TOKEN node test/browser/dashboard.js http://127.0.0.1:8080/dashboard PATH
//
// 1. Enters a wrong token: the page must say the token was refused and ask
//    again (reported as wrongTokenMessage).
// 2. Enters DASHBOARD_TOKEN: waits for PATH's card, its preview playing and
//    a refresh that lists the preview's own session; reports the card's
//    tracks and the viewer count shown then (viewersWithPreview).
// 3. Prints "[dashboard] state: listed" on stderr (the Go test then joins
//    a viewer) and waits for the viewer count to go up (viewersAfter).
// 4. Presses "Reload config" (reloadMessage), reads the WHEP viewer's
//    session id as its row shows it (viewerSessionShown), kicks that
//    session (gone from the card, viewersAfterKick) and the publisher with
//    a 1m ban (the card goes; kickPublisherMessage).
// 5. Hides the tab: reports the /api/v1 requests made in the next
//    HIDDEN_MS (fetchesWhileHidden; polling must stop).
//
// Prints one JSON line on stdout, the result, and exits 0 when every step
// ran (the Go test judges the figures), 1 otherwise ("reason" says why).
//
// Environment: CHROMIUM (browser binary), DASHBOARD_TOKEN (required),
// STEP_TIMEOUT_MS (each wait, default 30000).
'use strict';
const { launch, openPage } = require('./chromium');
const fs = require('fs');
const os = require('os');
const path = require('path');

const stepMs = +(process.env.STEP_TIMEOUT_MS || 30000);
// HIDDEN_MS covers two of the page's 2 s polling intervals.
const HIDDEN_MS = 5000;

function log(...args) {
  console.error('[dashboard]', ...args);
}

async function main(url, streamPath, token) {
  const result = { ok: false, url, pageErrors: [] };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-dashboard-'));
  let ctx;
  let step = 'load';
  try {
    ctx = await launch(userDataDir, {});
    const page = await openPage(ctx, result, log);
    await page.addInitScript(() => {
      // Count the page's API requests (to see polling stop when hidden).
      window.__apiFetches = 0;
      const origFetch = window.fetch;
      window.fetch = function (input) {
        if (String(input).includes('/api/v1/')) window.__apiFetches++;
        return origFetch.apply(this, arguments);
      };
    });
    const resp = await page.goto(url, { waitUntil: 'domcontentloaded' });
    if (!resp || resp.status() !== 200) {
      result.reason = `GET ${url}: HTTP ${resp ? resp.status() : 'no response'}`;
      return result;
    }
    result.csp = resp.headers()['content-security-policy'] || '';

    step = 'wrong token';
    await page.fill('#token', 'not-' + token);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('body[data-state="refused"]', { timeout: stepMs });
    result.wrongTokenMessage = await page.textContent('#message');
    result.asksAgain = await page.isVisible('#token');
    log('wrong token:', result.wrongTokenMessage);

    step = 'token';
    await page.fill('#token', token);
    await page.click('#login button[type=submit]');
    const card = `article[data-path="${streamPath}"]`;
    await page.waitForSelector(card, { timeout: stepMs });
    result.tracks = await page.$$eval(`${card} .tracks li`, lis => lis.map(li => li.textContent));
    log('listed:', result.tracks.join('; '));

    step = 'preview';
    await page.waitForSelector(`${card}[data-preview="playing"] tr[data-kind="preview"]`, { timeout: stepMs });
    // The card and its sessions come from one refresh: the preview is live
    // in the bridge when this count was taken.
    result.viewersWithPreview = await page.textContent(`${card} .viewers`);
    result.previewSize = await page.$eval(`${card} video`, v => [v.videoWidth, v.videoHeight]);
    result.previewMuted = await page.$eval(`${card} video`, v => v.muted);
    result.previewLabel = await page.textContent(`${card} .preview .badge`);
    log('preview plays', result.previewSize.join('x'), 'viewers shown:', result.viewersWithPreview);

    step = 'viewer';
    log('state: listed');
    await page.waitForFunction(([sel, before]) => {
      const n = Number(document.querySelector(sel).textContent);
      return n > Number(before);
    }, [`${card} .viewers`, result.viewersWithPreview], { timeout: stepMs, polling: 200 });
    result.viewersAfter = await page.textContent(`${card} .viewers`);
    log('viewers shown:', result.viewersAfter);

    step = 'reload';
    await page.click('#reload');
    await page.waitForFunction(() => /reload/i.test(document.getElementById('message').textContent), null, { timeout: stepMs });
    result.reloadMessage = await page.textContent('#message');
    log('reload:', result.reloadMessage);

    step = 'kick session';
    result.viewerSessionShown = await page.textContent(`${card} tr[data-kind="whep"] code`);
    await page.click(`${card} tr[data-kind="whep"] button`);
    await page.waitForFunction(sel => !document.querySelector(`${sel} tr[data-kind="whep"]`) &&
      document.querySelector(`${sel} .viewers`).textContent === '0', card, { timeout: stepMs, polling: 200 });
    result.kickSessionMessage = await page.textContent('#message');
    result.viewersAfterKick = await page.textContent(`${card} .viewers`);
    log('kick session:', result.kickSessionMessage);

    step = 'kick publisher';
    await page.fill(`${card} .ban`, '1m');
    await page.click(`${card} .kick`);
    await page.waitForSelector(card, { state: 'detached', timeout: stepMs });
    result.kickPublisherMessage = await page.textContent('#message');
    log('kick publisher:', result.kickPublisherMessage);

    step = 'hidden';
    await page.evaluate(() => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    const before = await page.evaluate(() => window.__apiFetches);
    await page.waitForTimeout(HIDDEN_MS);
    result.fetchesWhileHidden = (await page.evaluate(() => window.__apiFetches)) - before;

    result.ok = true;
    return result;
  } catch (e) {
    result.reason = `${step}: ${e.message}`;
    return result;
  } finally {
    if (ctx) await ctx.close().catch(e => log('closing the browser:', e.message));
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

const [url, streamPath] = process.argv.slice(2);
const token = process.env.DASHBOARD_TOKEN;
if (!url || !streamPath || !token) {
  console.error('usage: DASHBOARD_TOKEN=TOKEN node dashboard.js http://HOST:8080/dashboard PATH');
  process.exit(2);
}
main(url, streamPath, token).then(res => {
  console.log(JSON.stringify(res));
  if (!res.ok) log('FAIL:', res.reason);
  process.exit(res.ok ? 0 : 1);
}, e => {
  console.log(JSON.stringify({ ok: false, url, reason: String(e && e.stack || e) }));
  log('FAIL:', e && e.stack || e);
  process.exit(1);
});
