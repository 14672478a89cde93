// A minimal WHIP client (RFC 9725) for the bridge's publish page; the
// HTTP exchange is in wish.js.
//
// One WHIPSession is one attempt: a send-only RTCPeerConnection with one
// transceiver per track of the given MediaStream, H.264 preferred for
// video (the bridge's viewers all play it), Opus for audio.
//
//   const media = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
//   const s = new WHIPSession('/whip/live/cam', media, {token});
//   await s.start();   // throws WHIPError with the HTTP status on refusal
//   ...
//   s.stop();          // closes the connection, DELETEs the session
import { WISHSession, WISHError } from './wish.js';

// WHIPError is a refusal from the server (status > 0) or a failure to
// reach it (status 0); see WISHError.
export { WISHError as WHIPError };

// codecRank orders video codecs for the offer: H.264 with
// packetization-mode=1 first (the only H.264 the bridge accepts, and the
// codec every WHEP player and RTMP egress can take), Constrained Baseline
// before Baseline, Main and High (what every decoder plays); then H.264 in
// other modes; everything else (VP8, VP9, AV1, RTX, RED, FEC) after, in
// the browser's order.
function codecRank(c) {
  if (c.mimeType.toLowerCase() !== 'video/h264') return 10;
  const fmtp = (c.sdpFmtpLine || '').toLowerCase();
  if (!/packetization-mode=1/.test(fmtp)) return 9;
  const m = /profile-level-id=([0-9a-f]{4})/.exec(fmtp);
  switch (m && m[1]) {
    case '42e0': return 0; // Constrained Baseline
    case '4200': return 1; // Baseline
    case '4d00': return 2; // Main
    case '6400': return 3; // High
    default: return 4;
  }
}

// preferH264 puts H.264 first in the transceiver's codec list. Browsers
// that cannot (no setCodecPreferences, no H.264, or a list they refuse)
// keep their own order: the server picks what it can take from the offer.
// It returns the mime types in the order set, or null.
function preferH264(transceiver) {
  if (typeof transceiver.setCodecPreferences !== 'function') return null;
  // The spec checks the list against the sender's capabilities for a
  // send-only transceiver; older Chromium checked the receiver's.
  for (const caps of [RTCRtpSender.getCapabilities?.('video'), RTCRtpReceiver.getCapabilities?.('video')]) {
    if (!caps || !caps.codecs || !caps.codecs.some(c => codecRank(c) < 9)) continue;
    const codecs = caps.codecs
      .map((c, i) => ({ c, i, r: codecRank(c) }))
      .sort((a, b) => a.r - b.r || a.i - b.i)
      .map(x => x.c);
    try {
      transceiver.setCodecPreferences(codecs);
      return codecs.map(c => c.mimeType);
    } catch (_) {
      // Try the other capability list, then give up.
    }
  }
  return null;
}

// new WHIPSession(endpoint, stream, options): see WISHSession for endpoint
// and options; stream is the MediaStream to send (its audio and video
// tracks, at most one of each is expected).
export class WHIPSession extends WISHSession {
  constructor(endpoint, stream, options = {}) {
    super(endpoint, options);
    this.stream = stream;
    this.codecOrder = null; // video mime types in the order offered, if set
  }

  async start() {
    const pc = this.pc;
    for (const track of this.stream.getTracks()) {
      const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [this.stream] });
      if (track.kind === 'video') this.codecOrder = preferH264(t);
    }
    await this.negotiate();
  }
}
