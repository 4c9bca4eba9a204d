package wansim

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipe is one direction of a simulated stream: bytes written become
// readable one delay later, in order, and end of stream arrives the same
// way. Writes never block (the buffer is unbounded), which suits the short
// exchanges memberlist makes.
type pipe struct {
	delay time.Duration

	mu           sync.Mutex
	chunks       []chunk
	eofAt        time.Time // when the writer's close becomes visible; zero while open
	readerClosed bool      // the reading end was closed: writes fail
	writerClosed bool      // the writing end was closed: writes fail
	readDL       time.Time
	writeDL      time.Time
	wake         chan struct{} // closed and replaced on every change
}

type chunk struct {
	data []byte
	at   time.Time
}

func newPipe(delay time.Duration) *pipe {
	return &pipe{delay: delay, wake: make(chan struct{})}
}

// signalLocked wakes readers waiting for a change.
func (p *pipe) signalLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

func (p *pipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	switch {
	case p.writerClosed:
		return 0, net.ErrClosed
	case p.readerClosed:
		return 0, io.ErrClosedPipe
	case !p.writeDL.IsZero() && !now.Before(p.writeDL):
		return 0, os.ErrDeadlineExceeded
	}
	at := now.Add(p.delay)
	if n := len(p.chunks); n > 0 && p.chunks[n-1].at.After(at) {
		at = p.chunks[n-1].at
	}
	p.chunks = append(p.chunks, chunk{data: append([]byte(nil), b...), at: at})
	p.signalLocked()
	return len(b), nil
}

func (p *pipe) read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		n, wait, err := p.tryReadLocked(b, time.Now())
		wake := p.wake
		p.mu.Unlock()
		if n > 0 || err != nil {
			return n, err
		}
		p.sleep(wait, wake)
	}
}

// tryReadLocked returns data or an error when one is due, else how long
// to wait for the next due event (0: until woken).
func (p *pipe) tryReadLocked(b []byte, now time.Time) (int, time.Duration, error) {
	if p.readerClosed {
		return 0, 0, net.ErrClosed
	}
	if !p.readDL.IsZero() && !now.Before(p.readDL) {
		return 0, 0, os.ErrDeadlineExceeded
	}
	var next time.Time
	switch {
	case len(p.chunks) > 0 && !p.chunks[0].at.After(now):
		c := &p.chunks[0]
		n := copy(b, c.data)
		if c.data = c.data[n:]; len(c.data) == 0 {
			p.chunks = p.chunks[1:]
		}
		return n, 0, nil
	case len(p.chunks) > 0:
		next = p.chunks[0].at
	case !p.eofAt.IsZero() && !p.eofAt.After(now):
		return 0, 0, io.EOF
	case !p.eofAt.IsZero():
		next = p.eofAt
	}
	if !p.readDL.IsZero() && (next.IsZero() || p.readDL.Before(next)) {
		next = p.readDL
	}
	if next.IsZero() {
		return 0, 0, nil
	}
	return 0, max(next.Sub(now), time.Microsecond), nil
}

func (p *pipe) sleep(d time.Duration, wake <-chan struct{}) {
	if d == 0 {
		<-wake
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	}
}

func (p *pipe) update(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	p.signalLocked()
}

// conn is one end of a simulated stream.
type conn struct {
	in, out       *pipe
	local, remote net.Addr
	once          sync.Once
}

// newConnPair returns the two ends of a stream between a and b whose bytes
// take delay to cross in each direction.
func newConnPair(a, b net.Addr, delay time.Duration) (*conn, *conn) {
	ab, ba := newPipe(delay), newPipe(delay)
	return &conn{in: ba, out: ab, local: a, remote: b}, &conn{in: ab, out: ba, local: b, remote: a}
}

func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return c.in.read(b)
}

func (c *conn) Write(b []byte) (int, error) { return c.out.write(b) }

// Close stops both directions here at once; the peer reads the end of the
// stream one delay later, as it would a FIN.
func (c *conn) Close() error {
	c.once.Do(func() {
		c.in.update(func() { c.in.readerClosed = true })
		c.out.update(func() {
			c.out.writerClosed = true
			c.out.eofAt = time.Now().Add(c.out.delay)
			if n := len(c.out.chunks); n > 0 && c.out.chunks[n-1].at.After(c.out.eofAt) {
				c.out.eofAt = c.out.chunks[n-1].at
			}
		})
	})
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.in.update(func() { c.in.readDL = t })
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.out.update(func() { c.out.writeDL = t })
	return nil
}
