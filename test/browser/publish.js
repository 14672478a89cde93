// Publishes Chromium's fake camera and microphone through a bridge publish
// page (/publish/{path}) in headless Chromium.
//
// Setup:  npm ci --prefix test/browser   (playwright-core; Chromium itself is
//         Debian's: apt-get install chromium, or set CHROMIUM=/path/to/chrome)
// Usage:  node test/browser/publish.js http://127.0.0.1:8080/publish/live/cam [SECONDS]
//
// Opens the page, presses Start and waits until the page says it publishes
// (document.body.dataset.state === 'publishing'), then keeps publishing for
// SECONDS (default 15), checking every second that the page still
// publishes and that the encoder keeps producing frames
// (window.whipStats.framesEncoded). SIGTERM or SIGINT ends that wait
// early, as if the time were up. Finally it presses Stop and checks that
// the page DELETEd its WHIP session and went back to 'idle'.
//
// Prints one JSON line on stdout, the result, and exits 0 if it published
// throughout, 1 otherwise ("reason" says why). Browser console output and
// progress go to stderr, including one "[publish] state: NAME" line each
// time the page's state changes (the Go test starts watching when it sees
// "publishing").
//
// Environment: CHROMIUM (browser binary, default /usr/bin/chromium),
// PUBLISH_TIMEOUT_MS (how long to wait for 'publishing', default 30000).
'use strict';
const { launch, openPage } = require('./chromium');
const fs = require('fs');
const os = require('os');
const path = require('path');

const timeoutMs = +(process.env.PUBLISH_TIMEOUT_MS || 30000);

function log(...args) {
  console.error('[publish]', ...args);
}

// stopRequested resolves on the first SIGTERM/SIGINT; a second one exits
// at once (the browser is killed with us).
let signalled = false;
const stopRequested = new Promise(resolve => {
  const onSignal = sig => {
    if (signalled) process.exit(130);
    signalled = true;
    log(`${sig}: stopping early`);
    resolve();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
});

async function main(url, seconds) {
  const result = { ok: false, url, seconds, states: [], pageErrors: [] };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-publish-'));
  let ctx;
  try {
    ctx = await launch(userDataDir, {
      // Our own signal handlers decide when to stop (and press Stop first).
      handleSIGINT: false,
      handleSIGTERM: false,
    });
    const page = await openPage(ctx, result, log);
    await page.exposeFunction('__publishState', s => log('state:', s));
    await page.addInitScript(() => {
      // Note the page's WHIP requests and how the server answered them.
      window.__requests = [];
      const origFetch = window.fetch;
      window.fetch = function (input, init) {
        const p = origFetch.apply(this, arguments);
        const method = (init && init.method) || 'GET';
        if (method === 'POST' || method === 'DELETE') {
          const d = { method, url: String(input), status: 0 };
          window.__requests.push(d);
          p.then(r => { d.status = r.status; }, () => { d.status = -1; });
        }
        return p;
      };
      window.__states = [];
      const note = () => {
        const s = document.body && document.body.dataset.state;
        if (s && window.__states[window.__states.length - 1] !== s) {
          window.__states.push(s);
          window.__publishState(s);
        }
      };
      document.addEventListener('DOMContentLoaded', () => {
        note();
        new MutationObserver(note).observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
      });
    });

    const resp = await page.goto(url, { waitUntil: 'domcontentloaded' });
    if (!resp || resp.status() !== 200) {
      result.reason = `GET ${url}: HTTP ${resp ? resp.status() : 'no response'}`;
      return result;
    }
    result.csp = resp.headers()['content-security-policy'] || '';
    const snapshot = () => page.evaluate(() => ({
      state: document.body.dataset.state,
      status: (document.getElementById('status') || {}).textContent,
      stats: window.whipStats,
      states: window.__states,
      requests: window.__requests,
    }));
    const fill = s => Object.assign(result, {
      state: s.state, status: s.status, whipStats: s.stats, states: s.states || [], requests: s.requests || [],
    });

    // The Start button is enabled once the page's script has run.
    await page.click('#start:not([disabled])', { timeout: 10000 });
    log('pressed Start, waiting for the page to publish');
    const published = page.waitForFunction(() => document.body.dataset.state === 'publishing',
      null, { timeout: timeoutMs, polling: 100 }).then(() => true, () => false);
    if (!await Promise.race([published, stopRequested.then(() => null)])) {
      fill(await snapshot().catch(() => ({})));
      result.reason = signalled ? `stopped by a signal before publishing: state ${result.state}, status "${result.status}"`
        : `not publishing after ${timeoutMs} ms: state ${result.state}, status "${result.status}"`;
      return result;
    }
    const t0 = Date.now();
    log(`publishing; keeping it up for ${seconds} s`);

    // Keep publishing, checking every second that the page still does and
    // that the encoder produces frames.
    const problems = [];
    let frames = -1;
    let stalled = 0;
    for (;;) {
      const left = seconds * 1000 - (Date.now() - t0);
      if (left <= 0 || signalled) break;
      await Promise.race([page.waitForTimeout(Math.min(1000, left)), stopRequested]);
      const s = await snapshot();
      if (s.state !== 'publishing') {
        problems.push(`the page stopped publishing after ${((Date.now() - t0) / 1000).toFixed(1)} s: state ${s.state}, status "${s.status}"`);
        break;
      }
      const f = (s.stats && s.stats.framesEncoded) || 0;
      stalled = f > frames ? 0 : stalled + 1;
      frames = f;
      if (stalled >= 5) {
        problems.push(`no frame encoded for 5 s (framesEncoded ${f})`);
        break;
      }
    }
    result.publishedMs = Date.now() - t0;
    const s = await snapshot();
    fill(s);
    const st = s.stats || {};
    Object.assign(result, {
      videoCodec: st.videoCodec,
      audioCodec: st.audioCodec,
      codecOrder: st.codecOrder,
      framesEncoded: st.framesEncoded,
      framesSent: st.framesSent,
      frameWidth: st.frameWidth,
      frameHeight: st.frameHeight,
      framesPerSecond: st.framesPerSecond,
      qualityLimitationReason: st.qualityLimitationReason,
      audioPacketsSent: st.audioPacketsSent,
      bytesSent: st.bytesSent,
    });
    if (!(st.framesEncoded > 0)) problems.push('no video frame was encoded');
    if (!(st.audioPacketsSent > 0)) problems.push('no audio packet was sent');

    // Stop must DELETE the session and bring the page back to idle.
    // (Playwright sees requests the page makes while it is alive; pagehide
    // uses the same keepalive DELETE.)
    await page.click('#stop');
    try {
      await page.waitForFunction(() => document.body.dataset.state === 'idle' &&
        window.__requests.some(d => d.method === 'DELETE') && window.__requests.every(d => d.status !== 0),
      null, { timeout: 5000, polling: 100 });
    } catch (_) { /* reported below */ }
    fill(await snapshot());
    if (result.state !== 'idle') problems.push(`after Stop the page is in state ${result.state}, want idle`);
    if (!result.requests.some(d => d.method === 'DELETE' && d.status === 200)) {
      problems.push(`Stop did not DELETE the WHIP session: ${JSON.stringify(result.requests)}`);
    }
    if (result.pageErrors.length) problems.push(`page errors: ${result.pageErrors.join('; ')}`);
    await page.goto('about:blank');
    if (problems.length) {
      result.reason = problems.join('; ');
      return result;
    }
    result.ok = true;
    return result;
  } finally {
    if (ctx) await ctx.close().catch(e => log('closing the browser:', e.message));
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

const url = process.argv[2];
const seconds = +(process.argv[3] || 15);
if (!url || !(seconds >= 0)) {
  console.error('usage: node publish.js http://HOST:8080/publish/PATH [SECONDS]');
  process.exit(2);
}
main(url, seconds).then(res => {
  console.log(JSON.stringify(res));
  if (!res.ok) log('FAIL:', res.reason);
  process.exit(res.ok ? 0 : 1);
}, e => {
  console.log(JSON.stringify({ ok: false, url, reason: String(e && e.stack || e) }));
  log('FAIL:', e && e.stack || e);
  process.exit(1);
});
