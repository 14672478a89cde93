// The /publish/{path} page: sends the camera and microphone to the page's
// stream over WHIP, shows what is happening, and keeps trying until the
// user presses Stop.
//
// For tests and tooling it exposes:
//   document.body.dataset.state: idle | connecting | publishing | error
//     (error also while waiting to retry: the status line says which)
//   window.whipStats: counters from getStats(), refreshed every second
//     (see the stats object below).
// An optional ?token=... in the page URL is sent as the WHIP bearer token
// (the route's publish key).
import { WHIPSession, WHIPError } from './whip.js';

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 15000;
// 'disconnected' often heals by itself (a lost burst of consent checks).
const DISCONNECT_GRACE_MS = 4000;
// An answer but no connection after this long: the media path is blocked
// (typically the server's WebRTC UDP port); start over. The server gives
// up on a silent session after 10 s.
const CONNECT_TIMEOUT_MS = 12000;
// Refusals a retry cannot fix (the offer, the request, the token or the
// path is wrong): stop and let the user press Start again.
const FATAL_STATUS = new Set([400, 401, 403, 404, 413, 415]);
// What the camera is asked for; the browser gives the nearest it has.
const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

const body = document.body;
const preview = document.getElementById('preview');
const startBtn = document.getElementById('start');
const stopBtn = document.getElementById('stop');
const statusEl = document.getElementById('status');
const statsEl = document.getElementById('stats');

const token = new URLSearchParams(location.search).get('token') || '';
const endpoint = body.dataset.whip || '/whip/' + body.dataset.path;

const stats = {
  state: 'idle',
  connectionState: 'new',
  audioTrack: false,     // publishing a microphone
  videoTrack: false,     // publishing a camera
  codecOrder: null,      // video mime types as offered (null: the browser's order)
  videoCodec: '',        // negotiated, e.g. "video/H264"
  audioCodec: '',        // e.g. "audio/opus"
  framesEncoded: 0,      // outbound-rtp video
  framesSent: 0,
  frameWidth: 0,
  frameHeight: 0,
  framesPerSecond: 0,
  qualityLimitationReason: '',
  audioPacketsSent: 0,   // outbound-rtp audio
  bytesSent: 0,          // all outbound-rtp
  bitrate: 0,            // bits/s over the last refresh
  updatedAt: 0,          // Date.now() of the last refresh
};
window.whipStats = stats;

let media = null;     // the camera/microphone MediaStream while we hold it
let session = null;   // the current WHIPSession, null between attempts
let wanted = false;   // the user pressed Start and not Stop
let backoff = MIN_BACKOFF_MS;
let retryTimer = 0;
let graceTimer = 0;
let connectTimer = 0;
let lastBytes = 0;
let lastBytesAt = 0;

function setState(state, text) {
  stats.state = state;
  body.dataset.state = state;
  statusEl.textContent = text;
}

function showButtons(publishing) {
  startBtn.hidden = publishing;
  startBtn.disabled = publishing;
  stopBtn.hidden = !publishing;
  stopBtn.disabled = !publishing;
}

function resetStats() {
  Object.assign(stats, {
    connectionState: 'new', codecOrder: null, videoCodec: '', audioCodec: '',
    framesEncoded: 0, framesSent: 0, frameWidth: 0, frameHeight: 0, framesPerSecond: 0,
    qualityLimitationReason: '', audioPacketsSent: 0, bytesSent: 0, bitrate: 0, updatedAt: 0,
  });
  lastBytes = 0;
  lastBytesAt = 0;
  statsEl.textContent = '';
}

// mediaError explains a getUserMedia failure.
function mediaError(e) {
  switch (e && e.name) {
    case 'NotAllowedError':
      return 'the browser was not allowed to use the camera and microphone (allow it, e.g. in the address bar, then press Start again)';
    case 'NotFoundError':
      return 'no camera or microphone was found';
    case 'NotReadableError':
      return 'the camera or microphone is in use by another application';
    case 'OverconstrainedError':
      return 'the camera cannot capture video at all';
    default:
      return (e && e.message) || String(e);
  }
}

// getMedia asks for the camera and the microphone; if one of them is
// missing or busy it publishes the other alone.
async function getMedia() {
  const gum = c => navigator.mediaDevices.getUserMedia(c);
  try {
    return await gum({ video: VIDEO, audio: true });
  } catch (e) {
    if (!['NotFoundError', 'NotReadableError', 'OverconstrainedError'].includes(e.name)) throw e;
    for (const c of [{ video: VIDEO }, { audio: true }]) {
      try {
        return await gum(c);
      } catch (_) { /* try the next one */ }
    }
    throw e;
  }
}

function releaseMedia() {
  if (media) media.getTracks().forEach(t => t.stop());
  media = null;
  preview.srcObject = null;
}

// teardown ends the current attempt: closes the connection and DELETEs its
// session resource (keepalive, so this also works from pagehide).
function teardown() {
  clearTimeout(graceTimer);
  clearTimeout(connectTimer);
  if (session) {
    session.stop();
    session = null;
  }
}

async function start() {
  if (wanted) return;
  wanted = true;
  backoff = MIN_BACKOFF_MS;
  showButtons(true);
  resetStats();
  if (!media) {
    setState('connecting', 'Starting the camera and microphone\u2026');
    let m;
    try {
      m = await getMedia();
    } catch (e) {
      if (!wanted) return;
      wanted = false;
      showButtons(false);
      setState('error', `Error: ${mediaError(e)}.`);
      return;
    }
    if (!wanted) { // Stop pressed meanwhile
      m.getTracks().forEach(t => t.stop());
      return;
    }
    media = m;
    preview.srcObject = m;
    preview.play().catch(() => { /* muted autoplay is allowed; the preview is optional anyway */ });
    for (const t of m.getTracks()) t.addEventListener('ended', onTrackEnded);
  }
  stats.videoTrack = media.getVideoTracks().length > 0;
  stats.audioTrack = media.getAudioTracks().length > 0;
  connect();
}

function stop(state = 'idle', text = 'Stopped. Press Start to publish again.') {
  wanted = false;
  clearTimeout(retryTimer);
  teardown();
  releaseMedia();
  resetStats();
  showButtons(false);
  setState(state, text);
}

// onTrackEnded: a device went away (unplugged, or the permission was
// revoked). Without any live track there is nothing left to send.
function onTrackEnded() {
  if (media && media.getTracks().every(t => t.readyState === 'ended')) {
    stop('error', 'Error: the camera and microphone stopped. Press Start to try again.');
  }
}

function connect() {
  clearTimeout(retryTimer);
  teardown();
  if (!wanted || !media) return;
  setState('connecting', 'Connecting\u2026');
  let s;
  try {
    s = new WHIPSession(endpoint, media, { token });
  } catch (e) {
    stop('error', `Error: cannot create a WebRTC connection: ${e.message}`);
    return;
  }
  session = s;
  s.pc.addEventListener('connectionstatechange', () => onConnectionState(s));
  s.start().then(() => {
    if (s !== session) return;
    stats.codecOrder = s.codecOrder;
    watchTransport(s);
    if (s.pc.connectionState !== 'connected') {
      connectTimer = setTimeout(() => {
        if (s !== session) return;
        teardown();
        scheduleRetry(`Could not connect within ${CONNECT_TIMEOUT_MS / 1000} s ` +
          '(is the server\'s WebRTC UDP port reachable from here?)', 0);
      }, CONNECT_TIMEOUT_MS);
    }
  }, e => {
    if (s === session) failed(e);
  });
}

// watchTransport notices at once when the server ends the session (its
// DTLS close_notify closes the transport), e.g. when the route's publisher
// is taken over or the stream is closed on the server.
function watchTransport(s) {
  const snd = s.pc.getSenders().find(x => x.transport);
  const dtls = snd && snd.transport;
  if (!dtls) return;
  dtls.addEventListener('statechange', () => {
    if (dtls.state === 'closed') lost(s, 'the server ended the session');
    else if (dtls.state === 'failed') lost(s, 'DTLS failed');
  });
}

function onConnectionState(s) {
  if (s !== session) return;
  const st = s.pc.connectionState;
  stats.connectionState = st;
  clearTimeout(graceTimer);
  switch (st) {
    case 'connected':
      clearTimeout(connectTimer);
      backoff = MIN_BACKOFF_MS;
      setState('publishing', 'Publishing');
      break;
    case 'disconnected':
      setState('connecting', 'Connection interrupted, waiting for it to recover\u2026');
      graceTimer = setTimeout(() => lost(s, 'connection lost'), DISCONNECT_GRACE_MS);
      break;
    case 'failed':
      lost(s, 'connection failed');
      break;
    case 'closed':
      lost(s, 'connection closed');
      break;
  }
}

// lost handles the end of a connection that had been set up.
function lost(s, why) {
  if (s !== session) return;
  teardown();
  scheduleRetry(`Publishing stopped: ${why}.`, 0);
}

// failed handles a refused or failed offer.
function failed(e) {
  teardown();
  const status = e instanceof WHIPError ? e.status : 0;
  const msg = (e && e.message) || String(e);
  const text = status ? `Error: HTTP ${status}: ${msg}` : `Error: ${msg}`;
  if (FATAL_STATUS.has(status)) {
    stop('error', `${sentence(text)} Press Start to try again.`);
    return;
  }
  // 409 (someone else publishes here, or our previous session is not
  // gone yet), 503 (full: Retry-After says when) and network errors may
  // heal.
  scheduleRetry(text, e instanceof WHIPError ? e.retryAfter * 1000 : 0);
}

// sentence ends text with a full stop unless it has one.
function sentence(text) {
  return /[.!?\u2026]$/.test(text) ? text : text + '.';
}

function scheduleRetry(text, atLeastMs) {
  clearTimeout(retryTimer);
  resetStats();
  const delay = Math.max(atLeastMs, Math.round(backoff * (0.8 + 0.4 * Math.random())));
  backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  setState('error', `${sentence(text)} Retrying in ${Math.max(1, Math.round(delay / 1000))} s\u2026`);
  retryTimer = setTimeout(connect, delay);
}

async function refreshStats() {
  const s = session;
  if (!s) return;
  let report;
  try {
    report = await s.pc.getStats();
  } catch (_) {
    return; // closed meanwhile
  }
  if (s !== session) return;
  let bytes = 0;
  report.forEach(r => {
    if (r.type !== 'outbound-rtp') return;
    bytes += r.bytesSent || 0;
    const codec = r.codecId && report.get(r.codecId);
    if (r.kind === 'video') {
      stats.videoCodec = codec ? codec.mimeType : stats.videoCodec;
      stats.framesEncoded = r.framesEncoded || 0;
      stats.framesSent = r.framesSent || 0;
      stats.frameWidth = r.frameWidth || 0;
      stats.frameHeight = r.frameHeight || 0;
      stats.framesPerSecond = r.framesPerSecond || 0;
      stats.qualityLimitationReason = r.qualityLimitationReason || '';
    } else if (r.kind === 'audio') {
      stats.audioCodec = codec ? codec.mimeType : stats.audioCodec;
      stats.audioPacketsSent = r.packetsSent || 0;
    }
  });
  const now = performance.now();
  if (lastBytesAt && now > lastBytesAt) stats.bitrate = Math.round((bytes - lastBytes) * 8000 / (now - lastBytesAt));
  lastBytes = bytes;
  lastBytesAt = now;
  stats.bytesSent = bytes;
  stats.updatedAt = Date.now();
  renderStats();
}

function renderStats() {
  if (!stats.updatedAt || stats.connectionState !== 'connected') {
    statsEl.textContent = '';
    return;
  }
  const parts = [];
  if (stats.videoCodec) parts.push(stats.videoCodec.replace(/^video\//, ''));
  if (stats.frameWidth) parts.push(`${stats.frameWidth}\u00d7${stats.frameHeight}`);
  if (stats.framesPerSecond) parts.push(`${Math.round(stats.framesPerSecond)} fps`);
  if (stats.bitrate) parts.push(`${(stats.bitrate / 1e6).toFixed(2)} Mbit/s`);
  if (stats.qualityLimitationReason && stats.qualityLimitationReason !== 'none') {
    parts.push(`limited by ${stats.qualityLimitationReason}`);
  }
  if (!stats.videoTrack) parts.push('no camera');
  parts.push(stats.audioTrack ? `audio: ${stats.audioPacketsSent} packets` : 'no microphone');
  statsEl.textContent = parts.join(' \u00b7 ');
}

startBtn.addEventListener('click', start);
stopBtn.addEventListener('click', () => stop());

// Leaving the page ends the session at once (keepalive DELETE) instead of
// leaving it to the server's timeout, and frees the camera; coming back
// from the back/forward cache waits for Start again.
window.addEventListener('pagehide', () => {
  wanted = false;
  clearTimeout(retryTimer);
  teardown();
  releaseMedia();
});
window.addEventListener('pageshow', e => {
  if (e.persisted) stop('idle', 'Press Start to publish your camera and microphone.');
});

setInterval(refreshStats, 1000);

// Browsers give pages the camera only in a secure context: HTTPS, or
// http://localhost.
if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
  setState('error', 'Error: browsers allow the camera and microphone only on HTTPS pages or on ' +
    'http://localhost: open this page over HTTPS (e.g. behind a TLS reverse proxy), or use OBS or another WHIP client.');
} else if (typeof RTCPeerConnection === 'undefined') {
  setState('error', 'Error: this browser cannot publish over WebRTC (no RTCPeerConnection).');
} else {
  startBtn.disabled = false;
  setState('idle', 'Press Start to publish your camera and microphone.');
}
