// Measures how fast headless Chromium connects to a bridge's WHEP
// endpoint: the connect benchmark's browser viewer (cmd/bridge
// connect_bench_test.go, TestConnectTimes).
//
// Usage:  node test/browser/connect.js http://HOST:PORT/whep/PATH N
//
// Opens the bridge's index page (the WHEP endpoint's origin, so the page
// may POST to it) and joins the stream N times, one viewer after another,
// each a fresh RTCPeerConnection that receives video and audio and gathers
// its candidates before the POST (as the bridge's player does: the
// server does not need trickle ICE). In the page, performance.now() is
// taken just before the POST, when iceConnectionState becomes
// 'connected' and when the first video frame is decoded and presented
// (requestVideoFrameCallback). Then the session is DELETEd.
//
// Prints one "connect: ICE_NS TTFF_NS TRANSPORT" line per viewer on stdout
// (times from the POST, in nanoseconds, as the namespace viewer prints
// them; the selected candidate pair's transport, udp or tcp) and
// exits 0; on a failure exits 1 with the reason on stderr.
//
// Environment: CHROMIUM (browser binary), CONNECT_TIMEOUT_MS (per viewer,
// default 10000), CHROMIUM_ARGS (extra flags, space separated).
'use strict';
const { ARGS, launch, openPage } = require('./chromium');
const fs = require('fs');
const os = require('os');
const path = require('path');

const timeoutMs = +(process.env.CONNECT_TIMEOUT_MS || 10000);

function log(...args) {
  console.error('[connect]', ...args);
}

// joinOnce runs in the page: one viewer of whep, its times in ms from the
// POST and the transport it plays over, or {error}.
async function joinOnce({ whep, timeoutMs }) {
  // The protocol ('udp', 'tcp') of the selected candidate pair's local
  // candidate, '' if there is none.
  const selectedTransport = async pc => {
    const stats = await pc.getStats();
    for (const r of stats.values()) {
      if (r.type !== 'transport' || !r.selectedCandidatePairId) continue;
      const pair = stats.get(r.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      return (local && local.protocol) || '';
    }
    return '';
  };
  const pc = new RTCPeerConnection();
  const video = document.createElement('video');
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  document.body.appendChild(video);
  let resource = null;
  const timer = ms => new Promise((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms));
  try {
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const connected = new Promise(resolve => {
      pc.addEventListener('iceconnectionstatechange', () => {
        if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') resolve(performance.now());
      });
    });
    const firstFrame = new Promise(resolve => {
      pc.addEventListener('track', e => {
        if (e.track.kind !== 'video') return;
        video.srcObject = new MediaStream([e.track]);
        video.requestVideoFrameCallback(() => resolve(performance.now()));
        video.play().catch(() => {});
      });
    });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(resolve => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
    });
    const start = performance.now();
    const res = await fetch(whep, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
      cache: 'no-store',
    });
    const body = await res.text();
    if (res.status !== 201) return { error: `POST ${whep}: ${res.status} ${body.trim()}` };
    resource = new URL(res.headers.get('Location'), whep);
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const [ice, frame] = await Promise.race([Promise.all([connected, firstFrame]), timer(timeoutMs)]);
    return { ice: ice - start, ttff: frame - start, transport: await selectedTransport(pc) };
  } catch (e) {
    return { error: String(e && e.message || e) };
  } finally {
    pc.close();
    video.remove();
    if (resource) await fetch(resource, { method: 'DELETE' }).catch(() => {});
  }
}

async function main(whep, n) {
  const result = { pageErrors: [] };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-connect-'));
  const extra = (process.env.CHROMIUM_ARGS || '').split(' ').filter(Boolean);
  let ctx;
  try {
    ctx = await launch(userDataDir, extra.length ? { args: [...ARGS, ...extra] } : {});
    const page = await openPage(ctx, result, log);
    const origin = new URL(whep).origin + '/';
    const resp = await page.goto(origin, { waitUntil: 'domcontentloaded' });
    if (!resp || resp.status() !== 200) throw new Error(`GET ${origin}: HTTP ${resp ? resp.status() : 'no response'}`);
    for (let i = 0; i < n; i++) {
      const r = await page.evaluate(joinOnce, { whep, timeoutMs });
      if (r.error) throw new Error(`viewer ${i + 1}: ${r.error}`);
      console.log(`connect: ${Math.round(r.ice * 1e6)} ${Math.round(r.ttff * 1e6)} ${r.transport}`);
    }
  } finally {
    if (ctx) await ctx.close().catch(e => log('closing the browser:', e.message));
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

const [whep, n] = [process.argv[2], +process.argv[3]];
if (!whep || !(n > 0)) {
  console.error('usage: node connect.js http://HOST:PORT/whep/PATH N');
  process.exit(2);
}
main(whep, n).then(() => process.exit(0), e => {
  log('FAIL:', e && e.stack || e);
  process.exit(1);
});
