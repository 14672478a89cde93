// Plays a bridge player page (/watch/{path}) in headless Chromium and checks
// that video really plays.
//
// Setup:  npm ci --prefix test/browser   (playwright-core; Chromium itself is
//         Debian's: apt-get install chromium, or set CHROMIUM=/path/to/chrome)
// Usage:  node test/browser/watch.js http://127.0.0.1:8080/watch/live/test
//
// Waits until the page says it plays (document.body.dataset.state ===
// 'playing') and has decoded more than MIN_FRAMES frames
// (window.whepStats.framesDecoded), then checks the <video> element's size
// and that its currentTime advances, presses "Click to unmute" and reads
// the audio counters (reported, not judged: the Go test decides). Finally
// it checks that leaving the page (pagehide) DELETEs the WHEP session,
// and leaves.
//
// Prints one JSON line on stdout, the result, and exits 0 if the video
// played, 1 otherwise ("reason" says why). Browser console output and
// progress go to stderr, including one "[watch] state: NAME" line each
// time the page's state changes (the Go test publishes when it sees
// "offline").
//
// Environment: CHROMIUM (browser binary, default /usr/bin/chromium),
// WATCH_TIMEOUT_MS (how long to wait for playback, default 45000),
// WANT_WIDTH / WANT_HEIGHT (expected video size, default 640x360; 0x0
// accepts any size, for sources whose encoder adapts it).
'use strict';
const { launch, openPage } = require('./chromium');
const fs = require('fs');
const os = require('os');
const path = require('path');

const MIN_FRAMES = 60;
const timeoutMs = +(process.env.WATCH_TIMEOUT_MS || 45000);
const wantWidth = +(process.env.WANT_WIDTH || 640);
const wantHeight = +(process.env.WANT_HEIGHT || 360);

function log(...args) {
  console.error('[watch]', ...args);
}

async function main(url) {
  const result = { ok: false, url, states: [], pageErrors: [] };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-watch-'));
  let ctx;
  try {
    ctx = await launch(userDataDir, {});
    const page = await openPage(ctx, result, log);
    // Record every state the page goes through (offline before playing,
    // for instance), however briefly it stays there, and log each one as
    // "[watch] state: NAME" so a caller can act on it (publish once the
    // page says the stream is offline).
    await page.exposeFunction('__watchState', s => log('state:', s));
    await page.addInitScript(() => {
      // Note the page's DELETEs and how the server answered them.
      window.__deletes = [];
      const origFetch = window.fetch;
      window.fetch = function (input, init) {
        const p = origFetch.apply(this, arguments);
        if (init && init.method === 'DELETE') {
          const d = { url: String(input), status: 0 };
          window.__deletes.push(d);
          p.then(r => { d.status = r.status; }, () => { d.status = -1; });
        }
        return p;
      };
      window.__states = [];
      const note = () => {
        const s = document.body && document.body.dataset.state;
        if (s && window.__states[window.__states.length - 1] !== s) {
          window.__states.push(s);
          window.__watchState(s);
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
    log('page loaded, waiting for playback');

    const snapshot = () => page.evaluate(() => ({
      state: document.body.dataset.state,
      status: (document.getElementById('status') || {}).textContent,
      stats: window.whepStats,
      states: window.__states,
    }));
    try {
      await page.waitForFunction(
        min => document.body.dataset.state === 'playing' && window.whepStats && window.whepStats.framesDecoded > min,
        MIN_FRAMES, { timeout: timeoutMs, polling: 250 });
    } catch (e) {
      const s = await snapshot().catch(() => ({}));
      Object.assign(result, { state: s.state, status: s.status, whepStats: s.stats, states: s.states || [] });
      result.reason = `not playing with more than ${MIN_FRAMES} frames decoded after ${timeoutMs} ms: ` +
        `state ${s.state}, status "${s.status}"`;
      return result;
    }

    const sample = () => page.evaluate(() => {
      const v = document.querySelector('video');
      return { t: v.currentTime, w: v.videoWidth, h: v.videoHeight, paused: v.paused };
    });
    const a = await sample();
    await page.waitForTimeout(1000);
    const b = await sample();
    const s = await snapshot();
    const st = s.stats || {};
    Object.assign(result, {
      state: s.state,
      states: s.states,
      status: s.status,
      framesDecoded: st.framesDecoded,
      videoWidth: b.w,
      videoHeight: b.h,
      currentTime: [a.t, b.t],
      paused: b.paused,
    });

    // Sound: Chromium measures audio energy only on audio it plays out,
    // so press the page's unmute button first (as a viewer would), then
    // give the stats two refreshes.
    await page.click('#unmute');
    await page.waitForTimeout(2500);
    const au = await page.evaluate(() => ({
      muted: document.querySelector('video').muted,
      button: document.getElementById('unmute').textContent,
      stats: window.whepStats,
    }));
    Object.assign(result, {
      unmuted: !au.muted,
      unmuteButton: au.button,
      audioTrack: !!au.stats.audioTrack,
      audioPacketsReceived: au.stats.audioPacketsReceived,
      audioLevel: au.stats.audioLevel,
      totalAudioEnergy: au.stats.totalAudioEnergy,
      totalSamplesReceived: au.stats.totalSamplesReceived,
    });
    const problems = [];
    if (au.muted || au.button !== 'Mute') problems.push(`the unmute button did not unmute (muted ${au.muted}, label "${au.button}")`);
    if (wantWidth || wantHeight) {
      if (b.w !== wantWidth || b.h !== wantHeight) problems.push(`video is ${b.w}x${b.h}, want ${wantWidth}x${wantHeight}`);
    } else if (!(b.w > 0 && b.h > 0)) {
      problems.push(`video is ${b.w}x${b.h}, want a picture`);
    }
    if (!(b.t > a.t)) problems.push(`video.currentTime did not advance (${a.t} -> ${b.t})`);
    if (b.paused) problems.push('video element is paused');
    if (result.pageErrors.length) problems.push(`page errors: ${result.pageErrors.join('; ')}`);
    if (problems.length) {
      result.reason = problems.join('; ');
      return result;
    }

    // Leaving the page must DELETE the session. Playwright does not see
    // requests sent while a page unloads, so fire the page's pagehide
    // handler in place and watch its DELETE complete; then really leave.
    await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: false })));
    try {
      await page.waitForFunction(() => window.__deletes.length > 0 && window.__deletes.every(d => d.status !== 0),
        null, { timeout: 5000, polling: 100 });
    } catch (_) { /* reported below */ }
    result.deletes = await page.evaluate(() => window.__deletes);
    await page.goto('about:blank');
    if (!result.deletes.some(d => d.status === 200)) {
      result.reason = `leaving the page did not DELETE the WHEP session: ${JSON.stringify(result.deletes)}`;
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
if (!url) {
  console.error('usage: node watch.js http://HOST:8080/watch/PATH');
  process.exit(2);
}
main(url).then(res => {
  console.log(JSON.stringify(res));
  if (!res.ok) log('FAIL:', res.reason);
  process.exit(res.ok ? 0 : 1);
}, e => {
  console.log(JSON.stringify({ ok: false, url, reason: String(e && e.stack || e) }));
  log('FAIL:', e && e.stack || e);
  process.exit(1);
});
