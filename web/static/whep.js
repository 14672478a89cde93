// A minimal WHEP client (RFC 9725 playback side) for the bridge's player.
//
// One WHEPSession is one attempt: it creates a receive-only
// RTCPeerConnection (one video and one audio transceiver), gathers every
// ICE candidate into the offer (the server does not do trickle ICE),
// POSTs the offer as application/sdp and applies the answer. stop() closes
// the connection and DELETEs the session resource the server created.
//
//   const s = new WHEPSession('/whep/live/test', {token});
//   s.pc.ontrack = e => { video.srcObject = e.streams[0]; };
//   await s.start();   // throws WHEPError with the HTTP status on refusal
//   ...
//   s.stop();

// WHEPError is a refusal from the server (status > 0, message from its
// text/plain body) or a failure to reach it (status 0).
export class WHEPError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'WHEPError';
    this.status = status;
  }
}

// waitGathering resolves when pc has gathered all its candidates, or after
// timeoutMs: candidates found so far are then in localDescription, and a
// slow STUN server does not hold up playback.
function waitGathering(pc, timeoutMs) {
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

export class WHEPSession {
  // endpoint: the WHEP URL (relative URLs resolve against the page).
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

  async start() {
    const pc = this.pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc, this.gatherTimeoutMs);
    if (this.stopped) throw new WHEPError(0, 'stopped');

    let res;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: this.headers({ 'Content-Type': 'application/sdp' }),
        body: pc.localDescription.sdp,
        cache: 'no-store',
      });
    } catch (e) {
      throw new WHEPError(0, 'cannot reach the server: ' + e.message);
    }
    const body = await res.text().catch(() => '');
    if (res.status !== 201 && res.status !== 200) {
      throw new WHEPError(res.status, body.trim() || res.statusText || 'request failed');
    }
    const loc = res.headers.get('Location');
    if (loc) {
      const u = new URL(loc, this.endpoint);
      // The session lives on the server that answered. Behind a TLS or
      // path-preserving reverse proxy the server may still write its own
      // http://host/... URL; keep the path and send the DELETE where the
      // POST went (the page's CSP only allows this origin anyway).
      if (u.origin !== this.endpoint.origin) {
        this.resource = new URL(u.pathname + u.search, this.endpoint.origin);
      } else {
        this.resource = u;
      }
    }
    if (this.stopped) {
      this.deleteResource();
      throw new WHEPError(0, 'stopped');
    }
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
    } catch (e) {
      this.stop();
      throw new WHEPError(0, 'the server\'s answer was not accepted: ' + e.message);
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
  // offer still in flight is not aborted: when its answer arrives, start()
  // DELETEs the session the server made for it.
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    const close = () => {
      try { this.pc.close(); } catch (_) { /* already closed */ }
    };
    // Close the connection once the DELETE is answered (or after 1 s), so
    // the server ends the session because the viewer asked, not because
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
