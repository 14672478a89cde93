// A minimal WHEP client (draft-ietf-wish-whep, the playback side of
// RFC 9725) for the bridge's player; the HTTP exchange is in wish.js.
//
// One WHEPSession is one attempt: a receive-only RTCPeerConnection with
// one video and one audio transceiver.
//
//   const s = new WHEPSession('/whep/live/test', {token});
//   s.pc.ontrack = e => { video.srcObject = e.streams[0]; };
//   await s.start();   // throws WHEPError with the HTTP status on refusal
//   ...
//   s.stop();          // closes the connection, DELETEs the session
import { WISHSession, WISHError } from './wish.js';

// WHEPError is a refusal from the server (status > 0) or a failure to
// reach it (status 0); see WISHError.
export { WISHError as WHEPError };

// new WHEPSession(endpoint, options): see WISHSession.
export class WHEPSession extends WISHSession {
  async start() {
    this.pc.addTransceiver('video', { direction: 'recvonly' });
    this.pc.addTransceiver('audio', { direction: 'recvonly' });
    await this.negotiate();
  }
}
