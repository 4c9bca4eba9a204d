// Package node wires one broker node together from concrete parts: the
// bbolt Raft log and state, the file snapshot store, the Raft TCP transport,
// the replica and the gRPC server.
package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/labfed/labfed/broker"
)

// Config is a site's broker configuration file.
type Config struct {
	// Site is the institution's name in the federation.
	Site string `yaml:"site"`
	// Node names this broker; it defaults to the site name. A site may run
	// several brokers with different node names.
	Node    string `yaml:"node"`
	DataDir string `yaml:"data_dir"`
	Listen  struct {
		API  string `yaml:"api"`
		Raft string `yaml:"raft"`
	} `yaml:"listen"`
	// Advertise gives the addresses other nodes use, when they differ from
	// the listen addresses (NAT, 0.0.0.0 binds).
	Advertise struct {
		API  string `yaml:"api"`
		Raft string `yaml:"raft"`
	} `yaml:"advertise"`
	// UIDRange and GIDRange register the site with these ranges when it
	// first joins; later changes go through labfed site update.
	UIDRange string `yaml:"uid_range"`
	GIDRange string `yaml:"gid_range"`
	// TLS names the node's federation certificate (kind broker, its own
	// site and node name), the federation CA, and optionally the CA's
	// revocation list. Required unless the node runs with --dev-insecure.
	TLS struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
		CRL  string `yaml:"crl"`
	} `yaml:"tls"`
	// OIDC lists the identity providers people log in with through this
	// broker (labfed login).
	OIDC struct {
		Issuers []OIDCIssuer `yaml:"issuers"`
		// SessionTTL is how long a login lasts; default 8h, at most 24h.
		SessionTTL time.Duration `yaml:"session_ttl"`
	} `yaml:"oidc"`
	// Bootstrap is read only with --bootstrap on the federation's first
	// node, which registers the first coordinator and writes their
	// session credential.
	Bootstrap struct {
		Coordinator struct {
			Name       string   `yaml:"name"`
			Email      string   `yaml:"email"`
			Identities []string `yaml:"identities"`
		} `yaml:"coordinator"`
		// Credential is the file the coordinator's session credential is
		// written to (mode 0600); default DATA_DIR/bootstrap-credential.json.
		Credential string `yaml:"credential"`
		// CredentialTTL is its lifetime; default 24h.
		CredentialTTL time.Duration `yaml:"credential_ttl"`
	} `yaml:"bootstrap"`
	Raft struct {
		SnapshotThreshold uint64 `yaml:"snapshot_threshold"`
		// SnapshotInterval is how often the threshold is checked.
		SnapshotInterval time.Duration `yaml:"snapshot_interval"`
		TrailingLogs     uint64        `yaml:"trailing_logs"`
	} `yaml:"raft"`

	uidRange, gidRange *broker.Range
	coordIDs           []broker.Identity
}

// OIDCIssuer is an OpenID Connect provider whose ID tokens this broker
// accepts, with the client ids the labfed CLI is registered under there.
type OIDCIssuer struct {
	URL       string   `yaml:"url"`
	ClientIDs []string `yaml:"client_ids"`
	// CAFile holds PEM roots for the issuer's HTTPS; empty means the
	// system's roots.
	CAFile string `yaml:"ca_file"`
}

// LoadConfig reads and strictly decodes a config file: unknown fields, wrong
// types and missing required values are errors naming the file and line.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes a config file's bytes; name is used in messages.
func ParseConfig(name string, b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty; see testdata/config/rutgers.yaml for an example", name)
		}
		return nil, fmt.Errorf("%s: %s; see testdata/config/rutgers.yaml for the fields", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if err := broker.ValidateName("site", c.Site); err != nil {
		return fmt.Errorf("site: %w", err)
	}
	if c.Node == "" {
		c.Node = c.Site
	}
	if err := broker.ValidateName("node", c.Node); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if c.DataDir == "" {
		return errors.New("data_dir is required: the directory where this node keeps its Raft log, snapshots and state")
	}
	for _, a := range []struct{ field, v string }{{"listen.api", c.Listen.API}, {"listen.raft", c.Listen.Raft}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("%s %q is not HOST:PORT (for example 127.0.0.1:7100)", a.field, a.v)
		}
	}
	if c.Advertise.API == "" {
		c.Advertise.API = c.Listen.API
	}
	if c.Advertise.Raft == "" {
		c.Advertise.Raft = c.Listen.Raft
	}
	if t := c.TLS; t.CA != "" || t.Cert != "" || t.Key != "" || t.CRL != "" {
		if t.CA == "" || t.Cert == "" || t.Key == "" {
			return errors.New("tls needs ca, cert and key together (crl is optional); labfed init writes all three")
		}
	}
	if c.Raft.SnapshotInterval < 0 || (c.Raft.SnapshotInterval > 0 && c.Raft.SnapshotInterval < time.Second) {
		return fmt.Errorf("raft.snapshot_interval %s is too short; give at least 1s, such as 2m", c.Raft.SnapshotInterval)
	}
	if err := c.validateLogin(); err != nil {
		return err
	}
	if c.UIDRange != "" || c.GIDRange != "" {
		u, err := broker.ParseRange("uid", c.UIDRange)
		if err != nil {
			return fmt.Errorf("uid_range: %w", err)
		}
		g, err := broker.ParseRange("gid", c.GIDRange)
		if err != nil {
			return fmt.Errorf("gid_range: %w", err)
		}
		c.uidRange, c.gidRange = &u, &g
	}
	return nil
}

// IsLoopback reports whether host:port binds only to a loopback address.
func IsLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

const maxSessionTTL = 24 * time.Hour

func (c *Config) validateLogin() error {
	for i, is := range c.OIDC.Issuers {
		u, err := url.Parse(is.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("oidc.issuers[%d].url %q must be an https URL such as https://cilogon.org", i, is.URL)
		}
		if len(is.ClientIDs) == 0 {
			return fmt.Errorf("oidc.issuers[%d] (%s) needs client_ids: the client id labfed login is registered under at the issuer", i, is.URL)
		}
	}
	if t := c.OIDC.SessionTTL; t < 0 || (t > 0 && t < time.Minute) || t > maxSessionTTL {
		return fmt.Errorf("oidc.session_ttl %s is out of range; give between 1m and 24h, such as 8h", t)
	}
	b := &c.Bootstrap
	if b.CredentialTTL < 0 || (b.CredentialTTL > 0 && b.CredentialTTL < time.Minute) || b.CredentialTTL > maxSessionTTL {
		return fmt.Errorf("bootstrap.credential_ttl %s is out of range; give between 1m and 24h", b.CredentialTTL)
	}
	if b.Credential == "" {
		b.Credential = filepath.Join(c.DataDir, "bootstrap-credential.json")
	}
	co := b.Coordinator
	if co.Name == "" && co.Email == "" && len(co.Identities) == 0 {
		return nil
	}
	if err := broker.ValidateUsername(co.Name); err != nil {
		return fmt.Errorf("bootstrap.coordinator.name: %w", err)
	}
	if err := broker.ValidateEmail(co.Email); err != nil {
		return fmt.Errorf("bootstrap.coordinator.email: %w", err)
	}
	for _, s := range co.Identities {
		id, err := broker.ParseIdentity(s)
		if err != nil {
			return fmt.Errorf("bootstrap.coordinator.identities: %w", err)
		}
		c.coordIDs = append(c.coordIDs, id)
	}
	return nil
}
