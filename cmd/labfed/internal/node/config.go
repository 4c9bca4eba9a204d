// Package node wires one broker node together from concrete parts: the
// bbolt Raft log and state, the file snapshot store, the Raft TCP transport,
// the replica and the gRPC server.
package node

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/labfed/labfed/broker"
)

// Config is a site's broker configuration file.
type Config struct {
	// Site is the institution's name in the federation.
	Site string `yaml:"site"`
	// DisplayName is the institution's name as people read it ("Rutgers
	// University"); it defaults to Site.
	DisplayName string `yaml:"display_name"`
	// Node names this broker; it defaults to the site name. A site may run
	// several brokers with different node names.
	Node    string `yaml:"node"`
	DataDir string `yaml:"data_dir"`
	// Listen gives the bind addresses. Gossip (memberlist, TCP and UDP)
	// defaults to the API's host with the API's port + 2, and HTTP (the
	// trust bundle as JWKS for outside verifiers, HTTPS unless in
	// development mode) to the API's port + 3; an API port of 0 gives
	// ports of 0 too.
	Listen struct {
		API    string `yaml:"api"`
		Raft   string `yaml:"raft"`
		Gossip string `yaml:"gossip"`
		HTTP   string `yaml:"http"`
	} `yaml:"listen"`
	// Advertise gives the addresses other nodes (and, for HTTP, outside
	// verifiers) use, when they differ from the listen addresses (NAT,
	// 0.0.0.0 binds). Each defaults to its listen address.
	Advertise struct {
		API    string `yaml:"api"`
		Raft   string `yaml:"raft"`
		Gossip string `yaml:"gossip"`
		HTTP   string `yaml:"http"`
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
	// Gossip configures how brokers find each other and spread their
	// offers (hashicorp/memberlist).
	Gossip struct {
		// Keyring is a file of base64 AES keys, one a line, the first the
		// primary that encrypts (ReadGossipKeyring). It is required unless
		// the node runs in development mode, which the node checks when it
		// starts: parsing leaves it alone, so that a config can be checked
		// on a machine without the keys.
		Keyring string `yaml:"keyring"`
		// Label is bound into every gossip packet and stream, so that two
		// federations on one network ignore each other; default "labfed".
		Label string `yaml:"label"`
		// Join lists gossip addresses (HOST:PORT) of brokers to contact
		// first.
		Join []string `yaml:"join"`
	} `yaml:"gossip"`
	// Instruments, Compute and Storage are what the site offers. Their
	// names are unique across the three lists, because a grant names a
	// resource as SITE/NAME whatever its kind.
	Instruments []Instrument `yaml:"instruments"`
	Compute     []Compute    `yaml:"compute"`
	Storage     []Storage    `yaml:"storage"`
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
	// Audit configures the audit log's retention: the leader moves entries
	// older than Retention into files in ArchiveDir and the log keeps a
	// checkpoint. Zero keeps every entry in the log.
	Audit struct {
		Retention time.Duration `yaml:"retention"`
		// ArchiveDir defaults to DATA_DIR/audit-archive.
		ArchiveDir string `yaml:"archive_dir"`
		// ArchiveEvery is how often the leader looks; default 1h.
		ArchiveEvery time.Duration `yaml:"archive_every"`
	} `yaml:"audit"`
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

// Instrument is a microscope or other instrument the site offers; the
// federation calls it SITE/NAME.
type Instrument struct {
	Name string `yaml:"name"`
	// Type is the kind of instrument as people name it (TEM, SEM, FIB,
	// cryo-FIB), kept as written.
	Type  string `yaml:"type"`
	Model string `yaml:"model"`
	// Controller is the HOST:PORT of the instrument's control computer.
	// Only the site agent dials it; it is never gossiped.
	Controller string `yaml:"controller"`
	// RawData is the absolute path of the directory the instrument writes
	// its data to.
	RawData string `yaml:"raw_data"`
	// Status is StatusAvailable (the default), StatusMaintenance or
	// StatusOffline.
	Status string `yaml:"status"`
}

// Compute is a place the site runs analytics jobs; the federation calls it
// SITE/NAME.
type Compute struct {
	Name string `yaml:"name"`
	// Kind is KindLocal or KindSlurm.
	Kind string `yaml:"kind"`
	// GPUs is how many GPUs the target has; 0 for CPU only.
	GPUs int `yaml:"gpus"`
	// Software maps a package to the version installed ("cryosparc" →
	// "4.6.2"). Versions are exact: a CryoSPARC worker must run the
	// master's version.
	Software map[string]string `yaml:"software"`
	// Slurm is set for, and only for, KindSlurm.
	Slurm *Slurm `yaml:"slurm"`
}

// Slurm says where a SLURM compute target submits its jobs.
type Slurm struct {
	// Partition is required (sbatch --partition).
	Partition string `yaml:"partition"`
	// Account is charged for the jobs (sbatch --account); optional.
	Account string `yaml:"account"`
}

// Storage is a directory the site exports; the federation calls it
// SITE/NAME, and paths inside it SITE/NAME/PATH.
type Storage struct {
	Name     string `yaml:"name"`
	Path     string `yaml:"path"`
	ReadOnly bool   `yaml:"read_only"`
}

// Instrument statuses a config may give. The site agent also reports
// in_session while a session runs; a config does not.
const (
	StatusAvailable   = "available"
	StatusMaintenance = "maintenance"
	StatusOffline     = "offline"
)

// Kinds of compute target.
const (
	// KindLocal runs jobs on the site agent's machine.
	KindLocal = "local"
	// KindSlurm submits jobs to a SLURM partition.
	KindSlurm = "slurm"
)

// DefaultGossipLabel is the gossip label when the config gives none.
const DefaultGossipLabel = "labfed"

// Limits that keep a site's offer within what gossip carries.
const (
	maxResources   = 256 // instruments, compute targets, storage exports each
	maxSoftware    = 64  // packages per compute target
	maxText        = 256 // bytes of a display name, type, model, package or version
	maxGossipLabel = 255 // memberlist.LabelMaxSize
	maxProblems    = 20
)

// A Problem is one thing wrong in a config file, at Line (counted from 1;
// 0 when no line applies, as in an empty file).
type Problem struct {
	Line int
	Msg  string
}

// ConfigError is every problem found in one file, in the order of their
// lines. Its message has a "FILE:LINE: problem" line for each, as
// compilers print them.
type ConfigError struct {
	File     string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if p.Line > 0 {
			fmt.Fprintf(&b, "%s:%d: %s", e.File, p.Line, p.Msg)
		} else {
			fmt.Fprintf(&b, "%s: %s", e.File, p.Msg)
		}
	}
	return b.String()
}

// newConfigError sorts problems by line (keeping the order of those on one
// line) and keeps the first maxProblems.
func newConfigError(file string, ps []Problem) *ConfigError {
	slices.SortStableFunc(ps, func(a, b Problem) int { return a.Line - b.Line })
	if n := len(ps); n > maxProblems {
		ps = append(ps[:maxProblems:maxProblems], Problem{Msg: fmt.Sprintf("%d more problems not shown", n-maxProblems)})
	}
	return &ConfigError{File: file, Problems: ps}
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
// It fills in defaults and returns a *ConfigError listing every problem it
// finds.
//
// The file is decoded twice: into a yaml.Node, which gives every field's
// line (for the messages of the checks that follow decoding, and to tell
// a missing value from a zero one) and the unknown fields, with a hint;
// and strictly (KnownFields) into the Config, which finds wrong types.
func ParseConfig(name string, b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, newConfigError(name, []Problem{{Msg: "the file is empty; see testdata/config/rutgers.yaml for an example"}})
		}
		return nil, newConfigError(name, syntaxProblems(err, b))
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, newConfigError(name, []Problem{{Line: next.Line, Msg: "a second YAML document starts here; a config file holds one"}})
	} else if !errors.Is(err, io.EOF) {
		return nil, newConfigError(name, syntaxProblems(err, b))
	}
	pos := indexYAML(&doc)

	var c Config
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(&c); err != nil || len(pos.problems) > 0 {
		return nil, newConfigError(name, append(pos.problems, typeProblems(err, b, pos)...))
	}
	if ps := c.validate(pos); len(ps) > 0 {
		return nil, newConfigError(name, ps)
	}
	return &c, nil
}

// checker collects the problems of a decoded config, each at the line of
// the field it concerns (or of the nearest enclosing item present).
type checker struct {
	pos *positions
	ps  []Problem
}

func (k *checker) errorf(path, format string, args ...any) {
	k.ps = append(k.ps, Problem{Line: k.pos.line(path), Msg: fmt.Sprintf(format, args...)})
}

func (c *Config) validate(pos *positions) []Problem {
	k := &checker{pos: pos}
	if err := broker.ValidateName("site", c.Site); err != nil {
		k.errorf("site", "site: %v", err)
	}
	if c.DisplayName == "" {
		c.DisplayName = c.Site
	} else if !isText(c.DisplayName) {
		k.errorf("display_name", "display_name %q has a control character or more than %d bytes; give the institution's name as people read it, such as Rutgers University", c.DisplayName, maxText)
	}
	if c.Node == "" {
		c.Node = c.Site
	} else if err := broker.ValidateName("node", c.Node); err != nil {
		k.errorf("node", "node: %v", err)
	}
	if c.DataDir == "" {
		k.errorf("data_dir", "data_dir is required: the directory where this node keeps its Raft log, snapshots and state")
	}
	c.validateAddrs(k)
	if t := c.TLS; t.CA != "" || t.Cert != "" || t.Key != "" || t.CRL != "" {
		if t.CA == "" || t.Cert == "" || t.Key == "" {
			k.errorf("tls", "tls needs ca, cert and key together (crl is optional); labfed init writes all three")
		}
	}
	if c.Raft.SnapshotInterval < 0 || (c.Raft.SnapshotInterval > 0 && c.Raft.SnapshotInterval < time.Second) {
		k.errorf("raft.snapshot_interval", "raft.snapshot_interval %s is too short; give at least 1s, such as 2m", c.Raft.SnapshotInterval)
	}
	c.validateLogin(k)
	c.validateAudit(k)
	if c.UIDRange != "" || c.GIDRange != "" {
		// One range without the other is blamed on the line of the one
		// given.
		upath, gpath := "uid_range", "gid_range"
		if !k.pos.given[upath] {
			upath = gpath
		} else if !k.pos.given[gpath] {
			gpath = upath
		}
		u, uerr := broker.ParseRange("uid", c.UIDRange)
		if uerr != nil {
			k.errorf(upath, "uid_range: %v", uerr)
		}
		g, gerr := broker.ParseRange("gid", c.GIDRange)
		if gerr != nil {
			k.errorf(gpath, "gid_range: %v", gerr)
		}
		if uerr == nil && gerr == nil {
			c.uidRange, c.gidRange = &u, &g
		}
	}
	c.validateGossip(k)
	c.validateOffers(k)
	return k.ps
}

// validateAddrs checks the listen and advertise addresses and fills in the
// defaults: listen.gossip and listen.http from listen.api, advertise from
// listen.
func (c *Config) validateAddrs(k *checker) {
	apiOK := k.listenAddr("listen.api", c.Listen.API, "127.0.0.1:7100")
	k.listenAddr("listen.raft", c.Listen.Raft, "127.0.0.1:7101")
	for _, d := range []struct {
		path    string
		addr    *string
		offset  int // from the API port
		example string
	}{
		{"listen.gossip", &c.Listen.Gossip, 2, "127.0.0.1:7102"},
		{"listen.http", &c.Listen.HTTP, 3, "127.0.0.1:7103"},
	} {
		if *d.addr != "" {
			k.listenAddr(d.path, *d.addr, d.example)
			continue
		}
		if !apiOK {
			continue
		}
		host, port, _ := net.SplitHostPort(c.Listen.API)
		p, _ := strconv.Atoi(port)
		if p != 0 {
			p += d.offset
		}
		if p > 65535 {
			k.errorf("listen.api", "%s defaults to listen.api's port + %d, which is %d, past 65535; give %s", d.path, d.offset, p, d.path)
		} else {
			*d.addr = net.JoinHostPort(host, strconv.Itoa(p))
		}
	}
	listen := []struct{ path, addr string }{{"listen.api", c.Listen.API}, {"listen.raft", c.Listen.Raft}, {"listen.gossip", c.Listen.Gossip}, {"listen.http", c.Listen.HTTP}}
	for i, a := range listen {
		for _, b := range listen[:i] {
			if sameListener(a.addr, b.addr) {
				path := a.path
				if !k.pos.given[path] {
					path = b.path // a was defaulted: blame the one given
				}
				k.errorf(path, "%s %q and %s %q use the same port; each listener needs its own", b.path, b.addr, a.path, a.addr)
			}
		}
	}
	for _, a := range []struct {
		path         string
		addr, listen *string
		who, example string
	}{
		{"advertise.api", &c.Advertise.API, &c.Listen.API, "other nodes", "broker.rutgers.edu:7100"},
		{"advertise.raft", &c.Advertise.Raft, &c.Listen.Raft, "other nodes", "broker.rutgers.edu:7101"},
		{"advertise.gossip", &c.Advertise.Gossip, &c.Listen.Gossip, "other nodes", "broker.rutgers.edu:7102"},
		{"advertise.http", &c.Advertise.HTTP, &c.Listen.HTTP, "outside verifiers", "broker.rutgers.edu:7103"},
	} {
		if *a.addr == "" {
			*a.addr = *a.listen
			continue
		}
		if err := checkDialAddr(*a.addr); err != nil {
			k.errorf(a.path, "%s %q %v; give the host name or IP address and port %s reach this one at, such as %s", a.path, *a.addr, err, a.who, a.example)
		}
	}
}

// listenAddr checks a bind address; port 0 picks a free port.
func (k *checker) listenAddr(path, addr, example string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		k.errorf(path, "%s %q is not HOST:PORT (for example %s)", path, addr, example)
		return false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		k.errorf(path, "%s %q has port %q; give a number from 1 to 65535 (for example %s)", path, addr, port, example)
		return false
	}
	return true
}

// checkDialAddr checks an address someone dials: a host and a port from 1
// to 65535. Its error completes a sentence that starts with the address.
func checkDialAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("is not HOST:PORT")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("has port %q, not one from 1 to 65535", port)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return errors.New("names no host anyone can dial")
	}
	return nil
}

// sameListener reports whether two valid bind addresses would take the
// same port: the same port, not 0, and the same host or a wildcard one.
func sameListener(a, b string) bool {
	ha, pa, erra := net.SplitHostPort(a)
	hb, pb, errb := net.SplitHostPort(b)
	if erra != nil || errb != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { ip := net.ParseIP(h); return h == "" || (ip != nil && ip.IsUnspecified()) }
	return ha == hb || wild(ha) || wild(hb)
}

func (c *Config) validateGossip(k *checker) {
	g := &c.Gossip
	if g.Label == "" {
		g.Label = DefaultGossipLabel
	} else if len(g.Label) > maxGossipLabel || strings.IndexFunc(g.Label, unicode.IsControl) >= 0 {
		k.errorf("gossip.label", "gossip.label has a control character or more than %d bytes; give a short name for the federation, such as %s", maxGossipLabel, DefaultGossipLabel)
	}
	for i, addr := range g.Join {
		path := fmt.Sprintf("gossip.join[%d]", i)
		if err := checkDialAddr(addr); err != nil {
			k.errorf(path, "%s %q %v; give another broker's gossip address, such as broker.psc.edu:7202", path, addr, err)
		}
	}
}

// validateOffers checks instruments, compute targets and storage exports.
func (c *Config) validateOffers(k *checker) {
	names := map[string]string{} // name → path of the item that took it
	for _, l := range []struct {
		list string
		n    int
	}{{"instruments", len(c.Instruments)}, {"compute", len(c.Compute)}, {"storage", len(c.Storage)}} {
		if l.n > maxResources {
			k.errorf(l.list, "%s lists %d entries; at most %d", l.list, l.n, maxResources)
		}
	}
	for i := range c.Instruments {
		in := &c.Instruments[i]
		path := fmt.Sprintf("instruments[%d]", i)
		label := k.resourceName(c.Site, path, "instrument", in.Name, "krios-g4", names)
		k.text(path, label, "type", in.Type, "the kind of instrument, such as TEM, SEM, FIB or cryo-FIB")
		k.text(path, label, "model", in.Model, "the maker's model, such as Titan Krios G4")
		if in.Controller == "" {
			k.errorf(path+".controller", "%s: controller is required: the HOST:PORT of the instrument's control computer, reachable from the site agent only", label)
		} else if err := checkDialAddr(in.Controller); err != nil {
			k.errorf(path+".controller", "%s: controller %q %v; give the HOST:PORT of the instrument's control computer, such as 10.20.0.5:5900", label, in.Controller, err)
		}
		k.absPath(path, label, "raw_data", in.RawData, "the directory the instrument writes its data to, such as /data/krios-g4/raw")
		switch in.Status {
		case "":
			in.Status = StatusAvailable
		case StatusAvailable, StatusMaintenance, StatusOffline:
		case "in_session":
			k.errorf(path+".status", "%s: status in_session is reported by the site agent while a session runs; a config gives available, maintenance or offline", label)
		default:
			k.errorf(path+".status", "%s: status %q is not available, maintenance or offline", label, in.Status)
		}
	}
	for i := range c.Compute {
		ct := &c.Compute[i]
		path := fmt.Sprintf("compute[%d]", i)
		label := k.resourceName(c.Site, path, "compute target", ct.Name, "gpu-ws1", names)
		switch ct.Kind {
		case KindLocal, KindSlurm:
		case "":
			k.errorf(path+".kind", "%s: kind is required: local (jobs run on the site agent's machine) or slurm (jobs are submitted to a SLURM partition)", label)
		default:
			k.errorf(path+".kind", "%s: kind %q is not local or slurm", label, ct.Kind)
		}
		if !k.pos.given[path+".gpus"] {
			k.errorf(path+".gpus", "%s: gpus is required: how many GPUs the target has, 0 for CPU only", label)
		} else if ct.GPUs < 0 {
			k.errorf(path+".gpus", "%s: gpus %d is negative; give how many GPUs the target has, 0 for CPU only", label, ct.GPUs)
		}
		k.software(path, label, ct.Software)
		switch {
		case ct.Kind == KindSlurm && (ct.Slurm == nil || ct.Slurm.Partition == ""):
			k.errorf(path+".slurm.partition", "%s: slurm.partition is required for kind slurm: the partition jobs are submitted to (sbatch --partition), such as GPU-shared", label)
		case ct.Kind == KindLocal && ct.Slurm != nil:
			k.errorf(path+".slurm", "%s: slurm is only for kind slurm; remove it, or set kind: slurm", label)
		}
		if s := ct.Slurm; s != nil {
			for _, f := range []struct{ field, v string }{{"partition", s.Partition}, {"account", s.Account}} {
				if strings.IndexFunc(f.v, notWord) >= 0 {
					k.errorf(path+".slurm."+f.field, "%s: slurm.%s %q has a space or a control character; give the name sbatch --%s takes", label, f.field, f.v, f.field)
				}
			}
		}
	}
	for i := range c.Storage {
		st := &c.Storage[i]
		path := fmt.Sprintf("storage[%d]", i)
		label := k.resourceName(c.Site, path, "storage", st.Name, "raw", names)
		k.absPath(path, label, "path", st.Path, "the exported directory, such as /data/krios-g4/raw")
	}
}

// resourceName checks the name of the list item at path, records it in
// names, and returns how messages call the item: "instruments[1]
// (krios-g4)", or just the path while the name is not valid.
func (k *checker) resourceName(site, path, what, name, example string, names map[string]string) string {
	if name == "" {
		k.errorf(path+".name", "%s: name is required: a lower-case name such as %s, unique at the site; the federation calls it %s/NAME", path, example, site)
		return path
	}
	if err := broker.ValidateName(what, name); err != nil {
		k.errorf(path+".name", "%s: %v", path, err)
		return path
	}
	label := path + " (" + name + ")"
	if prev, ok := names[name]; ok {
		k.errorf(path+".name", "%s: name %s is already used by %s on line %d; a site's instruments, compute targets and storage need different names, because grants call each one %s/%s",
			label, name, prev, k.pos.line(prev), site, name)
	} else {
		names[name] = path
	}
	return label
}

// text checks a required field of free text that gossip spreads.
func (k *checker) text(path, label, field, v, what string) {
	switch {
	case strings.TrimSpace(v) == "":
		k.errorf(path+"."+field, "%s: %s is required: %s", label, field, what)
	case !isText(v):
		k.errorf(path+"."+field, "%s: %s %q has a control character or more than %d bytes", label, field, v, maxText)
	}
}

// absPath checks a required absolute path.
func (k *checker) absPath(path, label, field, v, what string) {
	switch {
	case v == "":
		k.errorf(path+"."+field, "%s: %s is required: the absolute path of %s", label, field, what)
	case !filepath.IsAbs(v):
		k.errorf(path+"."+field, "%s: %s %q is not an absolute path; give the full path, starting with /", label, field, v)
	}
}

// software checks a compute target's package versions, in the order of
// the package names so that messages come out the same every time.
func (k *checker) software(path, label string, sw map[string]string) {
	if len(sw) > maxSoftware {
		k.errorf(path+".software", "%s: software lists %d packages; at most %d", label, len(sw), maxSoftware)
	}
	for _, pkg := range slices.Sorted(maps.Keys(sw)) {
		v := sw[pkg]
		p := path + ".software." + pkg
		switch {
		case pkg == "" || strings.IndexFunc(pkg, notWord) >= 0 || len(pkg) > maxText:
			k.errorf(p, "%s: software package %q is not a name; give names such as cryosparc or relion", label, pkg)
		case strings.TrimSpace(v) == "":
			k.errorf(p, "%s: software.%s has no version; give the installed version, such as \"4.6.2\"", label, pkg)
		case strings.IndexFunc(v, notWord) >= 0 || strings.ContainsAny(v[:1], "<>=~^!") || len(v) > maxText:
			k.errorf(p, "%s: software.%s %q is not a version; give the installed version exactly, such as \"4.6.2\" (jobs, not targets, ask for ranges)", label, pkg, v)
		}
	}
}

// isText reports whether s is printable text gossip may carry.
func isText(s string) bool {
	return len(s) <= maxText && strings.IndexFunc(s, unicode.IsControl) < 0
}

// notWord reports a rune not allowed in names and versions.
func notWord(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

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

func (c *Config) validateAudit(k *checker) {
	a := &c.Audit
	if a.Retention < 0 || (a.Retention > 0 && a.Retention < time.Second) {
		k.errorf("audit.retention", "audit.retention %s is out of range; give how long entries stay in the log, such as 2160h (90 days), or 0 to keep them all", a.Retention)
	}
	if a.ArchiveEvery < 0 || (a.ArchiveEvery > 0 && a.ArchiveEvery < time.Second) {
		k.errorf("audit.archive_every", "audit.archive_every %s is out of range; give at least 1s, such as 1h", a.ArchiveEvery)
	}
	if a.ArchiveDir == "" && c.DataDir != "" {
		a.ArchiveDir = filepath.Join(c.DataDir, "audit-archive")
	}
	if a.ArchiveEvery == 0 {
		a.ArchiveEvery = time.Hour
	}
}

func (c *Config) validateLogin(k *checker) {
	for i, is := range c.OIDC.Issuers {
		path := fmt.Sprintf("oidc.issuers[%d]", i)
		u, err := url.Parse(is.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			k.errorf(path+".url", "%s.url %q must be an https URL such as https://cilogon.org", path, is.URL)
		}
		if len(is.ClientIDs) == 0 {
			k.errorf(path+".client_ids", "%s (%s) needs client_ids: the client id labfed login is registered under at the issuer", path, is.URL)
		}
	}
	if t := c.OIDC.SessionTTL; t < 0 || (t > 0 && t < time.Minute) || t > maxSessionTTL {
		k.errorf("oidc.session_ttl", "oidc.session_ttl %s is out of range; give between 1m and 24h, such as 8h", t)
	}
	b := &c.Bootstrap
	if b.CredentialTTL < 0 || (b.CredentialTTL > 0 && b.CredentialTTL < time.Minute) || b.CredentialTTL > maxSessionTTL {
		k.errorf("bootstrap.credential_ttl", "bootstrap.credential_ttl %s is out of range; give between 1m and 24h", b.CredentialTTL)
	}
	if b.Credential == "" {
		b.Credential = filepath.Join(c.DataDir, "bootstrap-credential.json")
	}
	co := b.Coordinator
	if co.Name == "" && co.Email == "" && len(co.Identities) == 0 {
		return
	}
	if err := broker.ValidateUsername(co.Name); err != nil {
		k.errorf("bootstrap.coordinator.name", "bootstrap.coordinator.name: %v", err)
	}
	if err := broker.ValidateEmail(co.Email); err != nil {
		k.errorf("bootstrap.coordinator.email", "bootstrap.coordinator.email: %v", err)
	}
	for i, s := range co.Identities {
		id, err := broker.ParseIdentity(s)
		if err != nil {
			k.errorf(fmt.Sprintf("bootstrap.coordinator.identities[%d]", i), "bootstrap.coordinator.identities: %v", err)
			continue
		}
		c.coordIDs = append(c.coordIDs, id)
	}
}

// ReadGossipKeyring reads a gossip keyring file: base64 AES keys of 16, 24
// or 32 bytes, one a line, the first the primary that encrypts. Blank lines
// and lines starting with # are skipped. Problems are reported as a
// *ConfigError naming the file and line, never the key.
func ReadGossipKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read gossip keyring: %w", err)
	}
	const gen = "generate one with: head -c 32 /dev/urandom | base64"
	var keys [][]byte
	var ps []Problem
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(line)
		switch {
		case err != nil:
			ps = append(ps, Problem{Line: n, Msg: "the key is not base64; " + gen})
		case len(key) != 16 && len(key) != 24 && len(key) != 32:
			ps = append(ps, Problem{Line: n, Msg: fmt.Sprintf("the key has %d bytes; AES keys have 16, 24 or 32 (%s)", len(key), gen)})
		default:
			keys = append(keys, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read gossip keyring %s: %w", path, err)
	}
	if len(ps) == 0 && len(keys) == 0 {
		ps = append(ps, Problem{Msg: "the gossip keyring holds no keys; put one base64 AES key a line, the primary first (" + gen + ")"})
	}
	if len(ps) > 0 {
		return nil, newConfigError(path, ps)
	}
	return keys, nil
}

// positions indexes a config's YAML tree by field path ("listen.api",
// "instruments[1].controller"): the line of each key or list item, which
// paths have a non-null value, and the values on each line. Walking the
// tree against the Config's type also finds problems: unknown fields,
// which it explains better than yaml.v3 ("did you mean …"), and fractions
// for whole numbers, which yaml.v3 silently truncates.
type positions struct {
	root     int
	lines    map[string]int
	given    map[string]bool
	values   map[int][]valueAt
	problems []Problem
}

type valueAt struct {
	path, scalar string
}

func indexYAML(doc *yaml.Node) *positions {
	p := &positions{root: 1, lines: map[string]int{}, given: map[string]bool{}, values: map[int][]valueAt{}}
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Line > 0 {
		p.root = n.Line
	}
	p.walk(n, reflect.TypeFor[Config](), "")
	return p
}

// line returns the line of path, or of its nearest ancestor present in
// the file: the item a missing field belongs to, or the top of the file.
func (p *positions) line(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		path = path[:max(strings.LastIndexAny(path, ".["), 0)]
	}
	return p.root
}

func (p *positions) record(path string, line int, v *yaml.Node) {
	if _, ok := p.lines[path]; ok {
		return // a duplicate key: yaml.v3 reports it
	}
	p.lines[path] = line
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind != yaml.ScalarNode || v.Tag != "!!null" {
		p.given[path] = true
	}
	p.values[v.Line] = append(p.values[v.Line], valueAt{path: path, scalar: v.Value})
}

// walk indexes the subtree n, which decodes into a t at path. It does not
// follow aliases, which could make it walk a small file for ever (the
// strict decoder, which limits aliasing, still checks what they hold).
func (p *positions) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		names, types := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, v := n.Content[i], n.Content[i+1]
			if key.Tag == "!!merge" {
				continue // the strict decoder still checks merged fields
			}
			child := joinPath(path, key.Value)
			ft, ok := types[key.Value]
			if !ok {
				p.problems = append(p.problems, Problem{Line: key.Line, Msg: unknownField(key.Value, path, n, names)})
				continue
			}
			p.record(child, key.Line, v)
			p.walk(v, ft, child)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, v := n.Content[i], n.Content[i+1]
			child := joinPath(path, key.Value)
			p.record(child, key.Line, v)
			p.walk(v, t.Elem(), child)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range n.Content {
			child := fmt.Sprintf("%s[%d]", path, i)
			p.record(child, item.Line, item)
			p.walk(item, t.Elem(), child)
		}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && t != reflect.TypeFor[time.Duration]():
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			msg := fmt.Sprintf("cannot unmarshal !!float `%s` into %s", n.Value, t)
			p.problems = append(p.problems, Problem{Line: n.Line, Msg: path + ": " + msg + "; " + typeHint(t.String())})
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields returns the YAML names of a struct's fields, in order, and
// their types.
func yamlFields(t reflect.Type) ([]string, map[string]reflect.Type) {
	var names []string
	types := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		names = append(names, name)
		types[name] = f.Type
	}
	return names, types
}

// unknownField explains a key the struct at path does not have, with the
// closest known name or, failing one, all of them.
func unknownField(key, path string, n *yaml.Node, names []string) string {
	where := "at the top level"
	if path != "" {
		where = "in " + path
		if strings.HasSuffix(path, "]") {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode && n.Content[i+1].Value != "" {
					where += " (" + n.Content[i+1].Value + ")"
					break
				}
			}
		}
	}
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	best, bestD := "", 3
	for _, name := range names {
		if d := editDistance(norm(key), name); d < bestD && d < len(name) {
			best, bestD = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("field %s not found %s; did you mean %s?", key, where, best)
	}
	return fmt.Sprintf("field %s not found %s; the fields there are %s", key, where, strings.Join(names, ", "))
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// syntaxProblems turns a yaml.v3 syntax error into a problem at its line.
func syntaxProblems(err error, src []byte) []Problem {
	line, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
	if l := sourceLine(src, line); strings.Contains(l[:len(l)-len(strings.TrimLeft(l, " \t"))], "\t") {
		msg += "; the line is indented with a tab: YAML indents with spaces only"
	} else {
		msg += "; this is not valid YAML: indent with spaces, never tabs, and quote values that contain \": \" or \" #\""
	}
	return []Problem{{Line: line, Msg: msg}}
}

// sourceLine returns line n (counted from 1) of src, or "".
func sourceLine(src []byte, n int) string {
	for i, l := range strings.Split(string(src), "\n") {
		if i+1 == n {
			return l
		}
	}
	return ""
}

// typeProblems turns the errors of the strict decoding into problems at
// their lines, naming the field and adding a hint when it can. Unknown
// fields the walk of the tree explained already are left out.
func typeProblems(err error, src []byte, pos *positions) []Problem {
	if err == nil {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return syntaxProblems(err, src)
	}
	var ps []Problem
	for _, s := range te.Errors {
		line, msg := splitLine(s)
		if strings.Contains(msg, " not found in type ") && slices.ContainsFunc(pos.problems, func(p Problem) bool { return p.Line == line }) {
			continue
		}
		ps = append(ps, Problem{Line: line, Msg: explainTypeError(msg, line, pos)})
	}
	return ps
}

// splitLine splits yaml.v3's "line N: message".
func splitLine(s string) (int, string) {
	rest, ok := strings.CutPrefix(s, "line ")
	if !ok {
		return 0, s
	}
	num, msg, ok := strings.Cut(rest, ": ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return 0, s
	}
	return n, msg
}

// explainTypeError names the field of a "cannot unmarshal X into T" and
// says what to give instead.
func explainTypeError(msg string, line int, pos *positions) string {
	head, typ, ok := strings.Cut(msg, " into ")
	if !ok || !strings.HasPrefix(head, "cannot unmarshal") {
		return msg
	}
	if strings.HasPrefix(typ, "struct {") {
		typ = "a section"
		msg = head + " into " + typ
	}
	// A scalar value is quoted in backquotes, shortened to 7 bytes and
	// "..." when longer than 10.
	_, val, quoted := strings.Cut(head, "`")
	val = strings.TrimSuffix(val, "`")
	match := func(s string) bool { return s == val }
	if short, ok := strings.CutSuffix(val, "..."); ok && len(val) == 10 {
		match = func(s string) bool { return len(s) > 10 && strings.HasPrefix(s, short) }
	}
	var paths []string
	for _, v := range pos.values[line] {
		if !quoted || match(v.scalar) {
			paths = append(paths, v.path)
		}
	}
	if len(paths) == 1 && paths[0] != "" {
		msg = paths[0] + ": " + msg
	}
	if hint := typeHint(typ); hint != "" {
		msg += "; " + hint
	}
	return msg
}

// typeHint says what to give for a Go type, as yaml.v3 names it.
func typeHint(typ string) string {
	switch {
	case typ == "node.Config":
		return "the file is a mapping of fields such as site: rutgers; see testdata/config/rutgers.yaml"
	case typ == "a section" || strings.HasPrefix(typ, "node."):
		return "give its fields as KEY: VALUE lines, indented below it"
	case strings.HasPrefix(typ, "[]"):
		return "give a list: [a, b], or one \"- item\" line each"
	case strings.HasPrefix(typ, "map["):
		return "give NAME: VALUE lines, indented below it, or {name: value}"
	case typ == "time.Duration":
		return "give a duration such as 90s, 15m or 8h"
	case typ == "bool":
		return "give true or false"
	case strings.HasPrefix(typ, "int") || strings.HasPrefix(typ, "uint"):
		return "give a whole number"
	case typ == "string":
		return "give a single value, quoted if it contains \": \""
	}
	return ""
}
