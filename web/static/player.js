// The /watch/{path} player: plays the page's stream over WHEP, shows what
// is happening, and keeps trying until the stream plays.
//
// For tests and tooling it exposes:
//   document.body.dataset.state: connecting | playing | offline | error
//   window.whepStats: counters from getStats(), refreshed every second
//     (see the stats object below).
// An optional ?token=... in the page URL is sent as the WHEP bearer token.
import { WHEPSession, WHEPError } from './whep.js';

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 10000;
// 'disconnected' often heals by itself (a lost burst of consent checks).
const DISCONNECT_GRACE_MS = 4000;
// Nothing received for this long while connected: the stream is gone or
// stuck, start over. Long enough for a first keyframe with a long GOP.
const STALL_MS = 12000;
// Refusals a retry cannot fix (the offer, the request or the token is
// wrong): stop and offer a manual retry instead of hammering the server.
const FATAL_STATUS = new Set([400, 401, 403, 413, 415]);

const body = document.body;
const video = document.getElementById('video');
const statusEl = document.getElementById('status');
const statsEl = document.getElementById('stats');
const unmuteBtn = document.getElementById('unmute');
const retryRow = document.getElementById('retry-row');
const retryBtn = document.getElementById('retry');

const token = new URLSearchParams(location.search).get('token') || '';
const endpoint = body.dataset.whep || '/whep/' + body.dataset.path;

const stats = {
  state: 'connecting',
  connectionState: 'new',
  framesDecoded: 0,         // inbound-rtp video
  frameWidth: 0,
  frameHeight: 0,
  framesPerSecond: 0,
  audioTrack: false,        // the answer has an audio track (it may carry no packets)
  audioPacketsReceived: 0,  // inbound-rtp audio
  audioLevel: 0,
  totalAudioEnergy: 0,
  totalSamplesReceived: 0,
  bytesReceived: 0,         // all inbound-rtp
  updatedAt: 0,             // Date.now() of the last refresh
};
window.whepStats = stats;

let session = null;     // the current WHEPSession, null between attempts
let backoff = MIN_BACKOFF_MS;
let retryTimer = 0;
let graceTimer = 0;
let lastBytes = 0;      // bytesReceived at lastProgressAt
let lastProgressAt = 0;

function setState(state, text) {
  stats.state = state;
  body.dataset.state = state;
  statusEl.textContent = text;
  renderMute();
}

function resetStats() {
  Object.assign(stats, {
    connectionState: 'new', framesDecoded: 0, frameWidth: 0, frameHeight: 0,
    framesPerSecond: 0, audioTrack: false, audioPacketsReceived: 0, audioLevel: 0,
    totalAudioEnergy: 0, totalSamplesReceived: 0, bytesReceived: 0, updatedAt: 0,
  });
  statsEl.textContent = '';
}

// teardown ends the current attempt: closes the connection and DELETEs its
// session resource.
function teardown() {
  clearTimeout(graceTimer);
  if (session) {
    session.stop();
    session = null;
  }
  video.srcObject = null;
}

function connect() {
  clearTimeout(retryTimer);
  teardown();
  resetStats();
  retryRow.hidden = true;
  if (typeof RTCPeerConnection === 'undefined') {
    setState('error', 'Error: this browser cannot play WebRTC (no RTCPeerConnection).');
    return;
  }
  setState('connecting', 'Connecting\u2026');

  const s = new WHEPSession(endpoint, { token });
  session = s;
  lastBytes = 0;
  lastProgressAt = performance.now();
  const media = new MediaStream();
  s.pc.addEventListener('track', e => {
    if (s !== session) return;
    media.addTrack(e.track);
    if (e.track.kind === 'audio') stats.audioTrack = true;
    if (video.srcObject !== media) {
      video.srcObject = media;
      video.play().catch(() => { /* autoplay refused: the button still works */ });
    }
  });
  s.pc.addEventListener('connectionstatechange', () => onConnectionState(s));
  s.start().then(() => watchTransport(s), e => {
    if (s === session) failed(e);
  });
}

// watchTransport notices at once when the server ends the session (its
// DTLS close_notify closes the transport); the connection state would only
// say 'disconnected' seconds later, when ICE consent runs out.
function watchTransport(s) {
  const r = s.pc.getReceivers().find(r => r.transport);
  const dtls = r && r.transport;
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
      if (stats.framesDecoded > 0) playing();
      else setState('connecting', 'Connected, waiting for the picture\u2026');
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

function playing() {
  if (!session || stats.state === 'playing') return;
  backoff = MIN_BACKOFF_MS;
  retryRow.hidden = true;
  setState('playing', 'Playing');
}

// lost handles the end of a connection that had been set up.
function lost(s, why) {
  if (s !== session) return;
  teardown();
  scheduleRetry('error', `Playback stopped: ${why}.`);
}

// failed handles a refused or failed offer.
function failed(e) {
  teardown();
  const status = e instanceof WHEPError ? e.status : 0;
  const msg = (e && e.message) || String(e);
  if (status === 404) {
    scheduleRetry('offline', `Stream offline: ${msg} (HTTP 404).`);
    return;
  }
  const text = status ? `Error: HTTP ${status}: ${msg}` : `Error: ${msg}`;
  if (FATAL_STATUS.has(status)) {
    setState('error', text);
    retryRow.hidden = false;
    return;
  }
  scheduleRetry('error', text);
}

function scheduleRetry(state, text) {
  clearTimeout(retryTimer);
  // +-20 % so that viewers of a stream that comes back do not all
  // reconnect in the same instant.
  const delay = Math.round(backoff * (0.8 + 0.4 * Math.random()));
  backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  setState(state, `${text} Retrying in ${Math.max(1, Math.round(delay / 1000))} s\u2026`);
  retryRow.hidden = false;
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
    if (r.type !== 'inbound-rtp') return;
    bytes += r.bytesReceived || 0;
    if (r.kind === 'video') {
      stats.framesDecoded = r.framesDecoded || 0;
      stats.frameWidth = r.frameWidth || 0;
      stats.frameHeight = r.frameHeight || 0;
      stats.framesPerSecond = r.framesPerSecond || 0;
    } else if (r.kind === 'audio') {
      stats.audioPacketsReceived = r.packetsReceived || 0;
      stats.audioLevel = r.audioLevel || 0;
      stats.totalAudioEnergy = r.totalAudioEnergy || 0;
      stats.totalSamplesReceived = r.totalSamplesReceived || 0;
    }
  });
  stats.bytesReceived = bytes;
  stats.updatedAt = Date.now();

  const now = performance.now();
  if (bytes > lastBytes) {
    lastBytes = bytes;
    lastProgressAt = now;
  } else if (s.pc.connectionState === 'connected' && now - lastProgressAt > STALL_MS) {
    lost(s, `nothing received for ${STALL_MS / 1000} s`);
    return;
  }
  if (stats.framesDecoded > 0 && s.pc.connectionState === 'connected') playing();
  renderStats();
}

function renderStats() {
  if (!stats.updatedAt || stats.connectionState !== 'connected') {
    statsEl.textContent = '';
    return;
  }
  const parts = [];
  if (stats.frameWidth) parts.push(`${stats.frameWidth}\u00d7${stats.frameHeight}`);
  if (stats.framesPerSecond) parts.push(`${Math.round(stats.framesPerSecond)} fps`);
  parts.push(`${stats.framesDecoded} frames decoded`);
  parts.push(stats.audioPacketsReceived ? `audio: ${stats.audioPacketsReceived} packets` : 'no audio received');
  statsEl.textContent = parts.join(' \u00b7 ');
}

function renderMute() {
  const muted = video.muted;
  unmuteBtn.textContent = muted ? 'Click to unmute' : 'Mute';
  unmuteBtn.setAttribute('aria-pressed', String(!muted));
  unmuteBtn.title = stats.state === 'playing' && !stats.audioPacketsReceived
    ? 'No audio has been received' : '';
}

unmuteBtn.addEventListener('click', () => {
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  renderMute();
});
video.addEventListener('volumechange', renderMute);
video.addEventListener('playing', () => {
  if (session && session.pc.connectionState === 'connected') playing();
});
// A click on the picture starts playback if the browser refused autoplay.
video.addEventListener('click', () => { if (video.paused) video.play().catch(() => {}); });
retryBtn.addEventListener('click', () => {
  backoff = MIN_BACKOFF_MS;
  connect();
});

// Leaving the page ends the session at once (keepalive DELETE) instead of
// leaving it to the server's ICE timeout; coming back from the
// back/forward cache starts a new one.
window.addEventListener('pagehide', () => {
  clearTimeout(retryTimer);
  teardown();
});
window.addEventListener('pageshow', e => {
  if (e.persisted) connect();
});

setInterval(refreshStats, 1000);
connect();
