package wansim

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func twoSites(t testing.TB, rttMS, loss float64) *Network {
	t.Helper()
	return NewNetwork(&Topology{
		Sites: []string{"east", "west"},
		RTTms: map[string]map[string]float64{"east": {"west": rttMS}},
		Loss:  loss,
	}, 1)
}

// attach returns a node's transport and its address, shutting it down at
// the end of the test.
func attach(t testing.TB, n *Network, name, site string) (memberlist.NodeAwareTransport, string) {
	t.Helper()
	tr, err := n.Transport(name, site)
	if err != nil {
		t.Fatalf("Transport(%q, %q) = %v", name, site, err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	addr, _ := n.Addr(name)
	return tr, addr
}

// receive collects packets until none arrives for quiet.
func receive(tr memberlist.Transport, quiet time.Duration) []*memberlist.Packet {
	var got []*memberlist.Packet
	for {
		select {
		case p := <-tr.PacketCh():
			got = append(got, p)
		case <-time.After(quiet):
			return got
		}
	}
}

func TestAddresses(t *testing.T) {
	n := twoSites(t, 10, 0)
	a, aAddr := attach(t, n, "east-1", "east")
	_, bAddr := attach(t, n, "west-1", "west")
	if aAddr != "127.77.1.1:7946" || bAddr != "127.77.2.1:7946" {
		t.Errorf("addresses = %s, %s, want 127.77.1.1:7946, 127.77.2.1:7946", aAddr, bAddr)
	}
	ip, port, err := a.FinalAdvertiseAddr("", 0)
	if err != nil || ip.String() != "127.77.1.1" || port != Port {
		t.Errorf("FinalAdvertiseAddr = %v, %d, %v", ip, port, err)
	}
	if _, err := n.Transport("east-1", "east"); err == nil {
		t.Error("second Transport for a running node: nil error")
	}
	if _, err := n.Transport("x", "mars"); err == nil {
		t.Error("Transport at an unknown site: nil error")
	}
	a.Shutdown()
	again, err := n.Transport("east-1", "east")
	if err != nil {
		t.Fatalf("Transport after Shutdown = %v", err)
	}
	defer again.Shutdown()
	if ip, _, _ := again.FinalAdvertiseAddr("", 0); ip.String() != "127.77.1.1" {
		t.Errorf("restarted node's address = %v, want its old 127.77.1.1", ip)
	}
	if _, err := n.Transport("east-1", "west"); err == nil {
		t.Error("Transport moving a node to another site: nil error")
	}
}

func TestPacketDelay(t *testing.T) {
	const rtt = 40 * time.Millisecond
	n := twoSites(t, 40, 0)
	a, _ := attach(t, n, "east-1", "east")
	b, bAddr := attach(t, n, "west-1", "west")
	a2, a2Addr := attach(t, n, "east-2", "east")

	const count = 100
	sent := map[byte]time.Time{}
	for i := range count {
		at, err := a.WriteToAddress([]byte{byte(i)}, memberlist.Address{Addr: bAddr})
		if err != nil {
			t.Fatal(err)
		}
		sent[byte(i)] = at
		time.Sleep(time.Millisecond)
	}
	got := receive(b, 200*time.Millisecond)
	if len(got) != count {
		t.Fatalf("received %d packets, want %d", len(got), count)
	}
	var delays []time.Duration
	for _, p := range got {
		delays = append(delays, p.Timestamp.Sub(sent[p.Buf[0]]))
		if p.From.String() != "127.77.1.1:7946" {
			t.Fatalf("From = %v, want 127.77.1.1:7946", p.From)
		}
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	median := delays[len(delays)/2]
	t.Logf("one-way delay east→west (RTT %v): min %v median %v max %v", rtt, delays[0], median, delays[len(delays)-1])
	if delays[0] < rtt/2 || median > rtt/2+10*time.Millisecond {
		t.Errorf("one-way delay min %v median %v, want ≥ %v and median within 10ms of it", delays[0], median, rtt/2)
	}

	start := time.Now()
	if _, err := a.WriteToAddress([]byte("x"), memberlist.Address{Addr: a2Addr}); err != nil {
		t.Fatal(err)
	}
	p := <-a2.PacketCh()
	if d := p.Timestamp.Sub(start); d > 10*time.Millisecond {
		t.Errorf("same-site delay = %v, want about 0", d)
	}
}

func TestPacketLoss(t *testing.T) {
	const loss, count = 0.25, 4000
	n := twoSites(t, 2, loss)
	a, _ := attach(t, n, "east-1", "east")
	b, bAddr := attach(t, n, "west-1", "west")
	done := make(chan int)
	go func() { done <- len(receive(b, 300*time.Millisecond)) }()
	for range count {
		if _, err := a.WriteTo([]byte("p"), bAddr); err != nil {
			t.Fatal(err)
		}
	}
	got := <-done
	lost := float64(count-got) / count
	sigma := math.Sqrt(loss * (1 - loss) / count)
	t.Logf("loss: configured %.2f, measured %.4f over %d packets (σ %.4f)", loss, lost, count, sigma)
	if math.Abs(lost-loss) > 5*sigma {
		t.Errorf("measured loss %.4f, want %.2f ± %.4f", lost, loss, 5*sigma)
	}
}

func TestStreamDelay(t *testing.T) {
	const rtt = 30 * time.Millisecond
	n := twoSites(t, 30, 0.5) // loss applies to packets only
	a, _ := attach(t, n, "east-1", "east")
	b, bAddr := attach(t, n, "west-1", "west")

	go func() { // echo server
		c := <-b.StreamCh()
		defer c.Close()
		io.Copy(c, c)
	}()
	start := time.Now()
	c, err := a.DialAddressTimeout(memberlist.Address{Addr: bAddr, Name: "west-1"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dial := time.Since(start)
	msg := make([]byte, 64<<10)
	for i := range msg {
		msg[i] = byte(i)
	}
	start = time.Now()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatal(err)
	}
	echo := time.Since(start)
	t.Logf("stream RTT %v: dial %v, 64 KiB echo %v", rtt, dial, echo)
	if dial < rtt || echo < rtt || echo > rtt+20*time.Millisecond {
		t.Errorf("dial %v, echo %v; want both ≥ %v and the echo within 20ms of it", dial, echo, rtt)
	}
	for i := range back {
		if back[i] != msg[i] {
			t.Fatalf("echo differs at byte %d", i)
		}
	}
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
}

func TestConnEOFAndDeadline(t *testing.T) {
	a, b := newConnPair(addr{net.IPv4(127, 77, 0, 1)}, addr{net.IPv4(127, 77, 0, 2)}, 5*time.Millisecond)
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 8)
	if _, err := b.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past deadline = %v, want a deadline error", err)
	}
	b.SetReadDeadline(time.Time{})
	a.Write([]byte("bye"))
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "bye" {
		t.Errorf("ReadAll after peer Close = %q, %v, want \"bye\", nil", got, err)
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Error("Write to a closed peer: nil error")
	}
}

func TestPartitionHeal(t *testing.T) {
	n := twoSites(t, 2, 0)
	a, _ := attach(t, n, "east-1", "east")
	b, bAddr := attach(t, n, "west-1", "west")
	c, cAddr := attach(t, n, "west-2", "west")

	n.Partition([]string{"east-1"}, []string{"west-1", "west-2"})
	a.WriteTo([]byte("p"), bAddr)
	if got := receive(b, 50*time.Millisecond); len(got) != 0 {
		t.Errorf("packet crossed a partition")
	}
	if _, err := a.DialTimeout(bAddr, time.Second); !errors.Is(err, ErrUnreachable) {
		t.Errorf("dial across a partition = %v, want ErrUnreachable", err)
	}
	b.WriteTo([]byte("p"), cAddr)
	if got := receive(c, 50*time.Millisecond); len(got) != 1 {
		t.Errorf("packet within a group: received %d, want 1", len(got))
	}

	n.Heal()
	a.WriteTo([]byte("p"), bAddr)
	if got := receive(b, 50*time.Millisecond); len(got) != 1 {
		t.Errorf("after Heal: received %d packets, want 1", len(got))
	}
	go func() { (<-b.StreamCh()).Close() }()
	conn, err := a.DialTimeout(bAddr, time.Second)
	if err != nil {
		t.Fatalf("dial after Heal = %v", err)
	}
	conn.Close()

	n.Kill("west-1")
	a.WriteTo([]byte("p"), bAddr)
	if got := receive(b, 50*time.Millisecond); len(got) != 0 {
		t.Errorf("packet reached a killed node")
	}
	if _, err := b.DialTimeout(cAddr, time.Second); !errors.Is(err, ErrUnreachable) {
		t.Errorf("dial from a killed node = %v, want ErrUnreachable", err)
	}
	n.Revive("west-1")
	a.WriteTo([]byte("p"), bAddr)
	if got := receive(b, 50*time.Millisecond); len(got) != 1 {
		t.Errorf("after Revive: received %d packets, want 1", len(got))
	}
}

// TestMemberlistPing runs memberlist itself over the simulator and checks
// the RTT it measures.
func TestMemberlistPing(t *testing.T) {
	n := twoSites(t, 40, 0)
	var lists []*memberlist.Memberlist
	for _, node := range []struct{ name, site string }{{"east-1", "east"}, {"west-1", "west"}} {
		tr, err := n.Transport(node.name, node.site)
		if err != nil {
			t.Fatal(err)
		}
		conf := memberlist.DefaultLocalConfig()
		conf.Name = node.name
		conf.Transport = tr
		conf.LogOutput = io.Discard
		ml, err := memberlist.Create(conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ml.Shutdown() })
		lists = append(lists, ml)
	}
	westAddr, _ := n.Addr("west-1")
	if _, err := lists[0].Join([]string{"west-1/" + westAddr}); err != nil {
		t.Fatalf("Join = %v", err)
	}
	if got := lists[1].NumMembers(); got != 2 {
		t.Errorf("west-1 sees %d members, want 2", got)
	}
	a, _ := net.ResolveUDPAddr("udp", westAddr)
	rtt, err := lists[0].Ping("west-1", a)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("memberlist ping east→west over a 40ms link: %v", rtt)
	if rtt < 40*time.Millisecond || rtt > 60*time.Millisecond {
		t.Errorf("Ping = %v, want 40–60ms", rtt)
	}
}
