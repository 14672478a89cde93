// What every browser test script shares: launching Debian's Chromium
// headless through playwright-core with the flags this machine needs
// (fake camera and microphone, no background networking), and collecting
// the page's errors (CSP violations come as console messages).
'use strict';
const { chromium } = require('playwright-core');

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'];

// launch starts Chromium on a fresh profile in userDataDir; options are
// added to the launch options (e.g. handleSIGINT: false).
async function launch(userDataDir, options) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ARGS,
    ...options,
  });
}

// openPage returns the context's page with its console going to log and
// its errors (uncaught, CSP) added to result.pageErrors.
async function openPage(ctx, result, log) {
  const page = ctx.pages()[0] || await ctx.newPage();
  result.userAgent = await page.evaluate(() => navigator.userAgent);
  page.on('console', m => {
    const text = m.text();
    log(`[console.${m.type()}]`, text);
    if (/Content Security Policy/i.test(text)) result.pageErrors.push(text);
  });
  page.on('pageerror', e => {
    log('[pageerror]', e.message);
    result.pageErrors.push(String(e.message));
  });
  return page;
}

module.exports = { ARGS, launch, openPage };
