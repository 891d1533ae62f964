package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// SetDelay holds every frame the given hosts send for d before it reaches
// any other host (d 0, or no hosts: no delay). A link between two delayed
// hosts has d added each way; a link between a delayed host and another,
// d one way.
//
// tc netem is not in these kernels, and neither is any qdisc that honours
// a departure time (fq, etf). A TCP relay delays only the connections made
// through it after the fault starts, while the connections that matter
// here (etcd's raft streams, the agents' etcd clients, streaming
// replication) are long-lived. So the delay is per frame, in user space,
// at the switch: while a delay is set, every host's port leaves the
// kernel's bridge and a small learning switch in this process forwards
// the frames between the ports (AF_PACKET sockets in the switch
// namespace), holding those from a delayed host. Established connections
// are delayed like new ones and nothing is reset: addresses and MACs are
// unchanged, the frames only take longer. When the delay ends the ports
// rejoin the bridge.
//
// A killed lab loses its switch with the process; the namespaces, and the
// detached ports with them, go at Cleanup.
func (l *Lab) SetDelay(d time.Duration, hosts ...*Host) error {
	if d < 0 || d > time.Minute {
		return fmt.Errorf("delay %s: want 0 to 1m", d)
	}
	if l.delay != nil {
		err := l.delay.heal(l)
		l.delay = nil
		if err != nil {
			return err
		}
	}
	if d == 0 || len(hosts) == 0 {
		return nil
	}
	delayed := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		delayed[h.port] = true
	}
	sw := &delaySwitch{macs: map[[6]byte]int{}}
	for _, h := range l.Hosts {
		// Off the bridge first: a frame read while the kernel still
		// bridges it would arrive twice.
		if err := ip("-n", l.sw, "link", "set", h.port, "nomaster"); err != nil {
			_ = sw.heal(l)
			return err
		}
		p := &swPort{name: h.port, q: make(chan frame, 1<<14)}
		if delayed[h.port] {
			p.delay = d
		}
		sw.ports = append(sw.ports, p)
		if err := inNamespace(l.sw, p.open); err != nil {
			_ = sw.heal(l)
			return fmt.Errorf("delay: open %s in %s: %w", h.port, l.sw, err)
		}
	}
	for i := range sw.ports {
		sw.wg.Add(2)
		go sw.receive(i)
		go sw.send(i)
	}
	l.delay = sw
	return nil
}

// vnetHdrLen is the size of struct virtio_net_hdr, which PACKET_VNET_HDR
// puts before each frame: it carries a frame's segmentation and checksum
// offload state, so a large TCP segment from a host's veth (GSO) crosses
// the switch whole and is split, if at all, where the kernel would.
const vnetHdrLen = 10

type frame struct {
	b   []byte // virtio_net_hdr, then the Ethernet frame
	due time.Time
}

type swPort struct {
	name  string
	fd    int
	delay time.Duration
	q     chan frame
	drops atomic.Int64
}

func (p *swPort) open() error {
	iface, err := net.InterfaceByName(p.name)
	if err != nil {
		return err
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	for _, opt := range []func() error{
		func() error { return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1) },
		// A short receive timeout: the receiver sees heal's stop flag.
		func() error {
			return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
		},
		func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20) },
		func() error {
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: iface.Index})
		},
	} {
		if err := opt(); err != nil {
			unix.Close(fd)
			return err
		}
	}
	p.fd = fd
	return nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// delaySwitch is a learning Ethernet switch with a delay line per port.
type delaySwitch struct {
	ports    []*swPort
	stopping atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	macs     map[[6]byte]int // source MAC -> port index
}

// receive reads what port i's host sends and queues it for send.
func (s *delaySwitch) receive(i int) {
	defer s.wg.Done()
	p := s.ports[i]
	defer close(p.q)
	buf := make([]byte, vnetHdrLen+256<<10) // room for BIG TCP's segments too
	for !s.stopping.Load() {
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // what this switch sent out of the port
		}
		if n < vnetHdrLen+14 {
			continue
		}
		var src [6]byte
		copy(src[:], buf[vnetHdrLen+6:vnetHdrLen+12])
		s.mu.Lock()
		s.macs[src] = i
		s.mu.Unlock()
		f := frame{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.delay)}
		select {
		case p.q <- f:
		default:
			p.drops.Add(1) // a full line drops, as a switch does
		}
	}
}

// send forwards port i's frames when they are due: to the port its
// destination MAC was learned on, or to every other port.
func (s *delaySwitch) send(i int) {
	defer s.wg.Done()
	for f := range s.ports[i].q {
		if w := time.Until(f.due); w > 0 {
			time.Sleep(w) // the delay line itself
		}
		var dst [6]byte
		copy(dst[:], f.b[vnetHdrLen:vnetHdrLen+6])
		s.mu.Lock()
		to, known := s.macs[dst]
		s.mu.Unlock()
		for j, q := range s.ports {
			if j == i || (known && dst[0]&1 == 0 && j != to) {
				continue
			}
			_, _ = unix.Write(q.fd, f.b) // a frame the port refuses is lost, as on a wire
		}
	}
}

// heal puts every port back on the bridge and stops the switch once the
// frames already in its delay lines are out.
func (s *delaySwitch) heal(l *Lab) error {
	var errs []error
	for _, h := range l.Hosts {
		errs = append(errs, ip("-n", l.sw, "link", "set", h.port, "master", "br0"))
	}
	s.stop()
	return errors.Join(errs...)
}

func (s *delaySwitch) stop() {
	s.stopping.Store(true)
	s.wg.Wait() // 0 if the switch never started
	for _, p := range s.ports {
		if p.fd != 0 {
			unix.Close(p.fd)
		}
	}
}
