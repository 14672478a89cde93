package reconnect

import "time"

// SetNow makes l read time from now (the tests' clock).
func (l *Loop) SetNow(now func() time.Time) { l.now = now }
