package rtmpwire

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Handshake does the client side of the simple RTMP handshake (RTMP
// specification 5.2) on rw, as librtmp (and so OBS) does: C1 has zeros
// where a version would ask for the digest ("complex") handshake, and S2
// is not checked, since servers that do the complex one do not echo C1.
// Deadlines are the caller's.
func Handshake(rw io.ReadWriter) error {
	c := make([]byte, 1+1536)
	c[0] = 3
	binary.BigEndian.PutUint32(c[1:], uint32(time.Now().UnixMilli()))
	if _, err := rand.Read(c[9:]); err != nil {
		return err
	}
	if _, err := rw.Write(c); err != nil {
		return err
	}
	s := make([]byte, HandshakeSize)
	if _, err := io.ReadFull(rw, s); err != nil {
		return err
	}
	if s[0] != 3 {
		return fmt.Errorf("server answers with RTMP version %d, expected 3", s[0])
	}
	// C2 echoes S1 (its time, then the time we read it, then its random).
	c2 := make([]byte, 1536)
	copy(c2, s[1:1537])
	binary.BigEndian.PutUint32(c2[4:], uint32(time.Now().UnixMilli()))
	_, err := rw.Write(c2)
	return err
}
