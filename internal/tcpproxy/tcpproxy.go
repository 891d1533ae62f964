// Package tcpproxy is a cuttable TCP proxy for fault injection in tests: a
// node's link to etcd goes through one, and Cut makes it a black hole
// (existing connections are dropped, new ones are accepted and never
// answered) until Restore. Loopback only; no root needed.
package tcpproxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections from its listener to Target.
type Proxy struct {
	Target string
	ln     net.Listener

	delay atomic.Int64 // per direction, nanoseconds (SetDelay)

	mu    sync.Mutex
	cuts  chan struct{} // closed (and replaced) at every Cut, Restore and Close
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Start listens on listenAddr (e.g. "127.0.0.1:0") and forwards to target.
func Start(listenAddr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{Target: target, ln: ln, conns: map[net.Conn]struct{}{}, cuts: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
	return !p.cut
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue // black hole: held open, never answered, dropped on Restore
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			up, err := net.Dial("tcp", p.Target)
			if err != nil {
				p.untrack(c)
				return
			}
			if !p.track(up) {
				p.untrack(up)
				p.untrack(c)
				return
			}
			done := make(chan struct{}, 2)
			go func() { p.copy(up, c); done <- struct{}{} }()
			go func() { p.copy(c, up); done <- struct{}{} }()
			<-done
			p.untrack(c)
			p.untrack(up)
			<-done
		}()
	}
}

// SetDelay holds every byte for d in each direction (0: none), on the
// connections already open too: a slow link, not a lossy one.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

type chunk struct {
	b   []byte
	due time.Time
}

// copy forwards src to dst through a delay line: each chunk read leaves
// once the delay at its reading has passed, in order.
func (p *Proxy) copy(dst, src net.Conn) {
	line := make(chan chunk, 1024)
	go func() {
		defer close(line)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				line <- chunk{buf[:n], time.Now().Add(time.Duration(p.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	p.mu.Lock()
	cuts := p.cuts
	p.mu.Unlock()
	for c := range line {
		if w := time.Until(c.due); w > 0 {
			t := time.NewTimer(w) // the delay line itself
			select {
			case <-t.C:
			case <-cuts: // the connection is gone: what it held is lost
				t.Stop()
				src.Close()
				for range line {
				}
				return
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close() // the reader ends, and with it the line
			for range line {
			}
			return
		}
	}
}

// Cut drops every connection and black-holes new ones.
func (p *Proxy) Cut() { p.setCut(true) }

// Restore forwards again; connections accepted while cut are closed so
// their clients reconnect.
func (p *Proxy) Restore() { p.setCut(false) }

// setCut switches the mode and drops every tracked connection: when
// cutting, the live ones; when restoring, the black-holed ones.
func (p *Proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	close(p.cuts)
	p.cuts = make(chan struct{})
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
