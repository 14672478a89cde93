// What the bridge's WHEP player and WHIP publisher have in common: one
// offer/answer exchange over HTTP (RFC 9725, draft-ietf-wish-whep) and the
// session resource it creates.
//
// A WISHSession is one attempt. Its subclass adds the transceivers
// (whep.js: receive-only; whip.js: send-only, with the camera's tracks),
// then negotiate() gathers every ICE candidate into the offer (the server
// does not need trickle ICE), POSTs it as application/sdp, remembers the
// Location of the session and applies the answer. stop() closes the
// connection and DELETEs the session resource.

// WISHError is a refusal from the server (status > 0, message from its
// text/plain body, retryAfter in seconds from a Retry-After header, else 0)
// or a failure to reach it (status 0).
export class WISHError extends Error {
  constructor(status, message, retryAfter = 0) {
    super(message);
    this.name = 'WISHError';
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// waitGathering resolves when pc has gathered all its candidates, or after
// timeoutMs: candidates found so far are then in localDescription, and a
// slow STUN server does not hold up the session.
export function waitGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise(resolve => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      resolve();
    };
    const onChange = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onChange);
  });
}

// retryAfterSeconds parses a Retry-After header given in seconds (the
// bridge never sends an HTTP date); 0 if absent or not a number.
function retryAfterSeconds(res) {
  const v = Number.parseInt(res.headers.get('Retry-After') || '', 10);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

export class WISHSession {
  // endpoint: the WHIP or WHEP URL (relative URLs resolve against the page).
  // options.token: sent as "Authorization: Bearer <token>" when non-empty.
  // options.gatherTimeoutMs: cap on ICE gathering before the POST (2 s).
  // options.rtcConfig: RTCConfiguration for the peer connection.
  constructor(endpoint, options = {}) {
    this.endpoint = new URL(endpoint, location.href);
    this.token = options.token || '';
    this.gatherTimeoutMs = options.gatherTimeoutMs ?? 2000;
    this.pc = new RTCPeerConnection(options.rtcConfig || {});
    this.resource = null; // session URL from the Location header
    this.stopped = false;
  }

  headers(extra = {}) {
    const h = { ...extra };
    if (this.token) h['Authorization'] = 'Bearer ' + this.token;
    return h;
  }

  // negotiate runs the offer/answer exchange for the transceivers the
  // caller has added. It throws a WISHError; after a refusal or a failure
  // nothing is left on the server.
  async negotiate() {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc, this.gatherTimeoutMs);
    if (this.stopped) throw new WISHError(0, 'stopped');

    let res;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: this.headers({ 'Content-Type': 'application/sdp' }),
        body: pc.localDescription.sdp,
        cache: 'no-store',
      });
    } catch (e) {
      throw new WISHError(0, 'cannot reach the server: ' + e.message);
    }
    const body = await res.text().catch(() => '');
    if (res.status !== 201 && res.status !== 200) {
      throw new WISHError(res.status, body.trim() || res.statusText || 'request failed', retryAfterSeconds(res));
    }
    const loc = res.headers.get('Location');
    if (loc) {
      // The session lives on the server that answered: in a cluster, the
      // node a 307 sent the POST to (res.url; its origin is in the page's
      // CSP). Behind a TLS or path-preserving reverse proxy the server may
      // still write its own http://host/... URL; keep the path and send
      // the DELETE where the POST went.
      const answered = new URL(res.url || this.endpoint);
      const u = new URL(loc, answered);
      if (u.origin !== answered.origin) {
        this.resource = new URL(u.pathname + u.search, answered.origin);
      } else {
        this.resource = u;
      }
    }
    if (this.stopped) {
      this.deleteResource();
      throw new WISHError(0, 'stopped');
    }
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
    } catch (e) {
      this.stop();
      throw new WISHError(0, 'the server\'s answer was not accepted: ' + e.message);
    }
  }

  // deleteResource DELETEs the session resource, once; it returns the
  // request's promise (never rejected), or null if there is nothing to
  // delete.
  deleteResource() {
    const url = this.resource;
    this.resource = null;
    if (!url) return null;
    // keepalive lets the request outlive the page when this runs from
    // pagehide. Failures do not matter: the server also ends sessions
    // whose connection closes or fails.
    return fetch(url, { method: 'DELETE', headers: this.headers(), keepalive: true })
      .then(() => {}, () => {});
  }

  // stop ends the session: safe to call more than once, at any time. An
  // offer still in flight is not aborted: when its answer arrives,
  // negotiate() DELETEs the session the server made for it.
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    const close = () => {
      try { this.pc.close(); } catch (_) { /* already closed */ }
    };
    // Close the connection once the DELETE is answered (or after 1 s), so
    // the server ends the session because the client asked, not because
    // the DTLS close_notify overtook the DELETE.
    const deleted = this.deleteResource();
    if (!deleted) {
      close();
      return;
    }
    const timer = setTimeout(close, 1000);
    deleted.then(() => {
      clearTimeout(timer);
      close();
    });
  }
}
