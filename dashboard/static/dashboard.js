// The bridge's dashboard. It holds no data of its own: everything it shows
// comes from the admin API (/api/v1, api-contract in the API's OpenAPI
// document) with the operator's token, which stays in this tab's
// sessionStorage. Every string from the API reaches the page through
// textContent or an attribute, never as HTML.
//
// While the tab is visible the page polls GET /api/v1/streams and
// /api/v1/sessions every POLL_MS and updates each stream's card in place
// (so its preview keeps playing); a hidden tab stops polling and its
// previews, and picks both up again when shown.

// TOKEN_KEY is where the token is kept in sessionStorage.
const TOKEN_KEY = 'bridge.api.token';
// POLL_MS: the figures the API gives (bitrate over the last few seconds,
// reader counts) do not move faster than this.
const POLL_MS = 2000;
// MAX_PREVIEWS bounds the previews playing at once: each is a WebRTC
// session decoding video in this browser; streams past it show a button.
const MAX_PREVIEWS = 8;
// PREVIEW_RETRY_MS: a refused or failed preview is tried again after this
// long, not on every poll.
const PREVIEW_RETRY_MS = 10000;

const $ = id => document.getElementById(id);

// APIError is the API's {"error": "..."} (status > 0) or a failure to
// reach it (status 0).
class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let timer = 0;
let polling = false;
// cards: the card of each live stream, by path.
const cards = new Map();

// escapePath percent-encodes each segment of a stream path, keeping the
// slashes.
function escapePath(p) {
  return p.split('/').map(encodeURIComponent).join('/');
}

// api calls /api/v1/<path> with the token; it resolves to the parsed JSON
// body (null when empty) or throws an APIError with the API's error text.
async function api(method, path) {
  let res;
  try {
    res = await fetch('/api/v1/' + path, {
      method,
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
    });
  } catch (e) {
    throw new APIError(0, 'cannot reach the bridge: ' + e.message);
  }
  const text = await res.text().catch(() => '');
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON: use the text */ }
  if (!res.ok) {
    const msg = body && typeof body.error === 'string' ? body.error : (text.trim() || res.statusText || 'request failed');
    throw new APIError(res.status, `${msg} (HTTP ${res.status})`);
  }
  return body;
}

// setMessage shows text in the status line; kind is '' , 'ok' or 'error'.
function setMessage(text, kind = '') {
  const m = $('message');
  m.textContent = text;
  m.className = kind;
}

// --- signing in and out -------------------------------------------------

function showLogin(message) {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  for (const card of cards.values()) removeCard(card);
  document.body.dataset.state = message ? 'refused' : 'login';
  $('live').hidden = true;
  $('actions').hidden = true;
  $('login').hidden = false;
  setMessage(message || '', message ? 'error' : '');
  $('token').value = '';
  $('token').focus();
}

function showLive() {
  $('login').hidden = true;
  $('live').hidden = false;
  $('actions').hidden = false;
}

$('login').addEventListener('submit', e => {
  e.preventDefault();
  const t = $('token').value.trim();
  if (!t) return;
  token = t;
  sessionStorage.setItem(TOKEN_KEY, token);
  setMessage('Checking the token\u2026');
  document.body.dataset.state = 'checking';
  poll();
});

$('logout').addEventListener('click', () => showLogin(''));

// failed reports an API error from action; a refused token asks again.
function failed(action, e) {
  if (e.status === 401) {
    showLogin(`The bridge refused this token: ${e.message}. Enter the api.token from the bridge's config.`);
    return;
  }
  if (e.status === 404 && action === 'update') {
    setMessage('The admin API is off on this bridge (no api.token in its config).', 'error');
    return;
  }
  setMessage(`${action}: ${e.message}`, 'error');
}

// --- polling ------------------------------------------------------------

async function poll() {
  clearTimeout(timer);
  if (polling || !token) return;
  polling = true;
  try {
    const [st, se] = await Promise.all([api('GET', 'streams'), api('GET', 'sessions')]);
    if (!token) return; // signed out while the requests ran
    if (document.body.dataset.state !== 'live') {
      document.body.dataset.state = 'live';
      setMessage('');
      showLive();
    }
    render(Array.isArray(st && st.streams) ? st.streams : [], Array.isArray(se && se.sessions) ? se.sessions : []);
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    failed('update', e);
  } finally {
    polling = false;
    schedule();
  }
}

function schedule() {
  clearTimeout(timer);
  if (token && !document.hidden) timer = setTimeout(poll, POLL_MS);
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    clearTimeout(timer);
    for (const card of cards.values()) stopPreview(card, '', 0);
  } else if (token) {
    poll();
  }
});

// --- formatting ---------------------------------------------------------

function formatBits(b) {
  if (typeof b !== 'number' || !Number.isFinite(b)) return '\u2013';
  if (b >= 1e6) return (b / 1e6).toFixed(2) + ' Mbit/s';
  if (b >= 1e3) return Math.round(b / 1e3) + ' kbit/s';
  return b + ' bit/s';
}

function formatBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '\u2013';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

// formatSince is "HH:MM:SS (for 3m12s)" of an RFC 3339 time.
function formatSince(ts) {
  const t = Date.parse(ts);
  if (!Number.isFinite(t)) return typeof ts === 'string' ? ts : '\u2013';
  let s = Math.max(0, Math.round((Date.now() - t) / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  s %= 60;
  const dur = h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(s).padStart(2, '0')}s` : `${s}s`;
  return `${new Date(t).toLocaleTimeString()} (for ${dur})`;
}

function formatCount(n) {
  return typeof n === 'number' ? String(n) : '';
}

function formatTrack(t) {
  const parts = [String(t.kind || '?'), String(t.codec || '?')];
  if (t.width && t.height) parts.push(`${t.width}\u00d7${t.height}`);
  if (t.fps) parts.push(`${t.fps} fps`);
  if (t.sample_rate) parts.push(`${t.sample_rate} Hz`);
  if (t.channels) parts.push(`${t.channels} ch`);
  return parts.join(' ');
}

// --- rendering ----------------------------------------------------------

function render(streams, sessions) {
  const byStream = new Map();
  for (const s of sessions) {
    const list = byStream.get(s.stream) || [];
    list.push(s);
    byStream.set(s.stream, list);
  }
  const live = new Set();
  const container = $('streams');
  streams.forEach((s, i) => {
    if (typeof s.path !== 'string') return;
    live.add(s.path);
    let card = cards.get(s.path);
    if (!card) {
      card = newCard(s.path);
      cards.set(s.path, card);
    }
    // Move only a card out of place: a moved <video> may pause.
    if (container.children[i] !== card.el) container.insertBefore(card.el, container.children[i] || null);
    updateCard(card, s, byStream.get(s.path) || []);
  });
  for (const card of cards.values()) {
    if (!live.has(card.path)) removeCard(card);
  }
  $('count').textContent = `(${live.size})`;
  $('empty').hidden = live.size > 0;
  startPreviews();
}

function newCard(path) {
  const el = $('stream-tpl').content.firstElementChild.cloneNode(true);
  el.dataset.path = path;
  const q = sel => el.querySelector(sel);
  const card = {
    path, el,
    video: q('video'),
    previewStatus: q('.preview-status'),
    session: null,   // the preview's WHEPSession
    retryAt: 0,      // when a failed preview may be tried again
    rows: new Map(), // session id -> <tr>
  };
  q('.path').textContent = path;
  q('.kick').addEventListener('click', () => kickPublisher(card, q('.ban').value.trim()));
  card.video.addEventListener('loadeddata', () => { el.dataset.preview = 'playing'; });
  return card;
}

function updateCard(card, s, sessions) {
  const q = sel => card.el.querySelector(sel);
  q('.private').hidden = !s.private;
  const p = s.publisher;
  q('.publisher').textContent = p
    ? `${p.protocol || '?'} from ${p.peer || '?'}, since ${formatSince(p.since)}`
    : 'none (waiting for the publisher to come back)';
  const tracks = q('.tracks');
  tracks.replaceChildren(...(Array.isArray(s.tracks) ? s.tracks : []).map(t => {
    const li = document.createElement('li');
    li.textContent = formatTrack(t);
    return li;
  }));
  q('.bitrate').textContent = formatBits(s.bitrate_in);
  const readers = s.readers && typeof s.readers === 'object' ? Object.entries(s.readers) : [];
  const total = readers.reduce((sum, [, n]) => sum + (typeof n === 'number' ? n : 0), 0);
  q('.viewers').textContent = String(total);
  q('.readers').textContent = readers.length ? '(' + readers.map(([k, n]) => `${k} ${n}`).join(', ') + ')' : '';
  q('.bytes-out').textContent = formatBytes(s.bytes_out);
  updateSessions(card, sessions);
}

// updateSessions keeps one row per session, by id, in the API's order.
function updateSessions(card, sessions) {
  const tbody = card.el.querySelector('tbody');
  const seen = new Set();
  sessions.forEach((s, i) => {
    const id = String(s.id);
    seen.add(id);
    let row = card.rows.get(id);
    if (!row) {
      row = newRow(id, String(s.log_id || id));
      card.rows.set(id, row);
    }
    if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
    const cells = row.cells;
    cells[1].textContent = String(s.kind || '');
    cells[2].textContent = String(s.peer || '');
    cells[3].textContent = String(s.state || '');
    cells[4].textContent = s.since ? formatSince(s.since) : '';
    cells[5].textContent = typeof s.bytes === 'number' ? formatBytes(s.bytes) : '';
    cells[6].textContent = formatCount(s.packets_lost);
    cells[7].textContent = formatCount(s.packets_retransmitted);
    row.dataset.kind = String(s.kind || '');
  });
  for (const [id, row] of card.rows) {
    if (!seen.has(id)) {
      row.remove();
      card.rows.delete(id);
    }
  }
  card.el.querySelector('.sessions').hidden = sessions.length === 0;
}

// newRow makes a session's row. It shows logID, the id the session's log
// lines carry (session=...), so the operator can look its story up; the
// whole id of a WHIP or WHEP session is its URL's capability, used only to
// kick it.
function newRow(id, logID) {
  const row = document.createElement('tr');
  for (let i = 0; i < 9; i++) row.appendChild(document.createElement('td'));
  const code = document.createElement('code');
  code.textContent = logID;
  code.title = 'in the log as session=' + logID;
  row.cells[0].appendChild(code);
  const kick = document.createElement('button');
  kick.type = 'button';
  kick.textContent = 'Kick';
  kick.addEventListener('click', () => kickSession(id, logID));
  row.cells[8].appendChild(kick);
  return row;
}

function removeCard(card) {
  stopPreview(card, '', 0);
  card.el.remove();
  cards.delete(card.path);
}

// --- actions ------------------------------------------------------------

async function kickSession(id, logID) {
  try {
    await api('DELETE', 'sessions/' + encodeURIComponent(id));
    setMessage(`Session ${logID} kicked.`, 'ok');
  } catch (e) {
    failed(`Kick session ${logID}`, e);
  }
  poll();
}

async function kickPublisher(card, ban) {
  const query = ban ? '?ban=' + encodeURIComponent(ban) : '';
  try {
    await api('DELETE', 'publishers/' + escapePath(card.path) + query);
    setMessage(`Publisher of ${card.path} kicked` + (ban ? `, banned from it for ${ban}.` : '.'), 'ok');
  } catch (e) {
    failed(`Kick publisher of ${card.path}`, e);
  }
  poll();
}

$('reload').addEventListener('click', async () => {
  try {
    await api('POST', 'reload');
    setMessage('Config reloaded.', 'ok');
  } catch (e) {
    failed('Reload config', e);
  }
  poll();
});

// --- previews -----------------------------------------------------------

// whep loads the built-in pages' WHEP client once.
let whep = null;
function loadWHEP() {
  whep ||= import('/static/whep.js');
  return whep;
}

function startPreviews() {
  if (document.hidden) return;
  let playing = 0;
  for (const card of cards.values()) if (card.session) playing++;
  const now = Date.now();
  for (const card of cards.values()) {
    if (card.session || now < card.retryAt) continue;
    if (playing >= MAX_PREVIEWS) {
      card.previewStatus.textContent = `no preview: at most ${MAX_PREVIEWS} play at once`;
      continue;
    }
    playing++;
    startPreview(card);
  }
}

// startPreview plays the stream muted through a WHEP session the API's
// token admits as a preview (?preview=1): not counted as a viewer.
async function startPreview(card) {
  const pending = {};
  card.session = pending; // holds the slot while the client loads
  let WHEPSession;
  try {
    ({ WHEPSession } = await loadWHEP());
  } catch (e) {
    whep = null; // a failed import is not cached: try again next time
    stopPreview(card, `no preview: the WHEP client /static/whep.js did not load (${e.message}); retrying`, PREVIEW_RETRY_MS);
    return;
  }
  if (card.session !== pending) return; // stopped meanwhile
  const s = new WHEPSession('/whep/' + escapePath(card.path) + '?preview=1', { token });
  card.session = s;
  card.previewStatus.textContent = 'connecting\u2026';
  const media = new MediaStream();
  s.pc.addEventListener('track', e => {
    media.addTrack(e.track);
    if (card.video.srcObject !== media) card.video.srcObject = media;
  });
  s.pc.addEventListener('connectionstatechange', () => {
    if (card.session !== s) return;
    const st = s.pc.connectionState;
    if (st === 'connected') card.previewStatus.textContent = '';
    else if (st === 'failed' || st === 'closed') stopPreview(card, `preview ${st}; retrying`, PREVIEW_RETRY_MS);
  });
  try {
    await s.start();
  } catch (e) {
    if (card.session === s) stopPreview(card, `no preview: ${e.message}`, PREVIEW_RETRY_MS);
  }
}

// stopPreview ends card's preview, shows why and allows the next one
// after retryMs (0: at the next poll).
function stopPreview(card, why, retryMs) {
  const s = card.session;
  card.session = null;
  if (s && typeof s.stop === 'function') s.stop();
  card.video.srcObject = null;
  delete card.el.dataset.preview;
  card.previewStatus.textContent = why;
  card.retryAt = Date.now() + retryMs;
}

window.addEventListener('pagehide', () => {
  for (const card of cards.values()) stopPreview(card, '', 0);
});

if (token) {
  setMessage('Loading\u2026');
  document.body.dataset.state = 'checking';
  poll();
} else {
  showLogin('');
}
