package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures a Node.
type Config struct {
	// Name is the node's name, unique in the federation; Site its site.
	Name, Site string

	// BindAddr and BindPort are where gossip listens (UDP and TCP); port 0
	// picks a free one, which Node.Addr then reports. BindAddr defaults to
	// 0.0.0.0. Both are ignored when Transport is set.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort, when set, are what other nodes dial.
	AdvertiseAddr string
	AdvertisePort int

	// Keys are the AES keys of the gossip keyring (16, 24 or 32 bytes);
	// Keys[0] is the primary, which encrypts, and every key decrypts.
	Keys [][]byte
	// Label is bound into every packet and stream (as GCM additional data
	// when encrypting); every node of a federation must use the same one.
	Label string
	// DevPlaintext allows gossip without Keys, for development only.
	// Without it New refuses to start unencrypted.
	DevPlaintext bool

	// Transport replaces memberlist's UDP/TCP transport (the WAN simulator
	// in tests).
	Transport memberlist.NodeAwareTransport

	// DeadOfferTTL is how long the offers of a dead or departed node stay
	// listed as unreachable before they are dropped (default 5m).
	DeadOfferTTL time.Duration
	// KeyTimeout bounds how long a key operation waits for members to
	// acknowledge it (default 5s).
	KeyTimeout time.Duration
	// ReconnectInterval is how often the node tries to rejoin one dead
	// member, which is how the two sides of a healed partition find each
	// other again (default 30s). ReconnectTimeout is how long a dead member
	// is remembered and retried (default 24h).
	ReconnectInterval time.Duration
	ReconnectTimeout  time.Duration
	// KeysChanged, when set, is called with the whole keyring (primary
	// first) after a key operation changed it, locally or by a member's
	// broadcast, so the node can persist it and restart with it.
	KeysChanged func(keys [][]byte)

	// Logger receives the node's and memberlist's logs (default
	// slog.Default()).
	Logger *slog.Logger
	// Tune may adjust memberlist's configuration (tests shorten intervals).
	// It runs before the settings that make gossip secure, so it cannot
	// weaken encryption or the label.
	Tune func(*memberlist.Config)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ErrNoKeys is returned by New when Config has no keys and does not set
// DevPlaintext.
var ErrNoKeys = errors.New("gossip encryption keys are required: set keys (16, 24 or 32 random bytes, the same on every node), or dev_plaintext for development only")

func (c Config) withDefaults() (Config, error) {
	if err := checkName("node", c.Name, maxNameLen); err != nil {
		return c, err
	}
	if err := checkName("site", c.Site, maxSiteLen); err != nil {
		return c, err
	}
	if len(c.Keys) == 0 && !c.DevPlaintext {
		return c, ErrNoKeys
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return c, fmt.Errorf("gossip key %d: %w", i+1, err)
		}
		for _, prev := range c.Keys[:i] {
			if bytes.Equal(prev, k) {
				return c, fmt.Errorf("gossip key %d is listed twice", i+1)
			}
		}
	}
	// The keyring keeps the slices it is given; a caller reusing its
	// buffers must not change our keys.
	keys := make([][]byte, len(c.Keys))
	for i, k := range c.Keys {
		keys[i] = bytes.Clone(k)
	}
	c.Keys = keys
	if len(c.Label) > memberlist.LabelMaxSize {
		return c, fmt.Errorf("gossip label of %d bytes; at most %d", len(c.Label), memberlist.LabelMaxSize)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dead offer TTL", c.DeadOfferTTL}, {"key timeout", c.KeyTimeout}, {"reconnect interval", c.ReconnectInterval}, {"reconnect timeout", c.ReconnectTimeout}} {
		if d.v < 0 {
			return c, fmt.Errorf("gossip %s is negative (%v)", d.name, d.v)
		}
	}
	setDefault(&c.BindAddr, "0.0.0.0")
	setDefault(&c.DeadOfferTTL, 5*time.Minute)
	setDefault(&c.KeyTimeout, 5*time.Second)
	setDefault(&c.ReconnectInterval, 30*time.Second)
	setDefault(&c.ReconnectTimeout, 24*time.Hour)
	setDefault(&c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// memberlistConfig starts from memberlist's WAN defaults: brokers of
// different institutions talk across the Internet.
func (n *Node) memberlistConfig() *memberlist.Config {
	c := memberlist.DefaultWANConfig()
	c.BindAddr, c.BindPort = n.cfg.BindAddr, n.cfg.BindPort
	c.AdvertiseAddr, c.AdvertisePort = n.cfg.AdvertiseAddr, n.cfg.AdvertisePort
	if c.AdvertiseAddr != "" && c.AdvertisePort == 0 {
		// memberlist would advertise port 0; with BindPort 0 it fills in
		// the port it picked.
		c.AdvertisePort = c.BindPort
	}
	if n.cfg.Transport != nil {
		c.Transport = n.cfg.Transport
	}
	if n.cfg.Tune != nil {
		n.cfg.Tune(c)
	}
	// What follows is not Tune's to change.
	c.Name = n.cfg.Name
	d := &delegate{n}
	c.Delegate, c.Events, c.Ping = d, d, d
	c.Conflict, c.Merge, c.Alive = nil, nil, nil
	c.DelegateProtocolVersion, c.DelegateProtocolMin, c.DelegateProtocolMax = wireVersion, wireVersion, wireVersion
	c.Logger, c.LogOutput = newMemberlistLogger(n.log, n.noteSuspect), nil
	c.Label, c.SkipInboundLabelCheck = n.cfg.Label, false
	c.SecretKey, c.Keyring = nil, n.keyring
	c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	return c
}
