package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/broker/trust"
	"github.com/labfed/labfed/cmd/labfed/internal/node"
	"github.com/labfed/labfed/cmd/labfed/internal/oidcissuer"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// seed is the sample directory the demo loads (testdata/demo/directory.yaml).
type seed struct {
	Sites []struct {
		Name     string `yaml:"name"`
		UIDRange string `yaml:"uid_range"`
		GIDRange string `yaml:"gid_range"`
	} `yaml:"sites"`
	Users []struct {
		Name       string   `yaml:"name"`
		Email      string   `yaml:"email"`
		Home       string   `yaml:"home"`
		Roles      []string `yaml:"roles"`
		Identities []string `yaml:"identities"`
	} `yaml:"users"`
	Projects []struct {
		Name    string   `yaml:"name"`
		Members []string `yaml:"members"`
	} `yaml:"projects"`
	Pins []struct {
		User     string `yaml:"user"`
		Site     string `yaml:"site"`
		UID      uint32 `yaml:"uid"`
		GID      uint32 `yaml:"gid"`
		Username string `yaml:"username"`
	} `yaml:"pins"`
	Grants []struct {
		User     string   `yaml:"user"`
		Project  string   `yaml:"project"`
		Resource string   `yaml:"resource"`
		Actions  []string `yaml:"actions"`
		Until    string   `yaml:"until"`
	} `yaml:"grants"`
}

func loadSeed(path string) (*seed, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read demo directory: %w; run the demo from the repository root or give --seed", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s seed
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return &s, nil
}

// apply writes the seed into the directory. Records that already exist are
// left as they are, so a demo can be restarted on the same directory.
func (s *seed) apply(ctx context.Context, d pb.DirectoryServiceClient) error {
	skipExisting := func(err error) error {
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	}
	for _, st := range s.Sites {
		u, err := parseRangePB("uid", st.UIDRange)
		if err != nil {
			return err
		}
		g, err := parseRangePB("gid", st.GIDRange)
		if err != nil {
			return err
		}
		if _, err := d.AddSite(ctx, &pb.AddSiteRequest{Name: st.Name, UidRange: u, GidRange: g}); skipExisting(err) != nil {
			return fmt.Errorf("site %s: %w", st.Name, err)
		}
	}
	for _, u := range s.Users {
		ids, err := parseIdentities(u.Identities)
		if err != nil {
			return err
		}
		if _, err := d.AddUser(ctx, &pb.AddUserRequest{Name: u.Name, Email: u.Email, Home: u.Home, Roles: u.Roles, Identities: ids}); skipExisting(err) != nil {
			return fmt.Errorf("user %s: %w", u.Name, err)
		}
	}
	for _, p := range s.Projects {
		if _, err := d.AddProject(ctx, &pb.AddProjectRequest{Name: p.Name}); skipExisting(err) != nil {
			return fmt.Errorf("project %s: %w", p.Name, err)
		}
		for _, m := range p.Members {
			if _, err := d.AddProjectMember(ctx, &pb.ProjectMemberRequest{Project: p.Name, User: m}); skipExisting(err) != nil {
				return fmt.Errorf("project %s member %s: %w", p.Name, m, err)
			}
		}
	}
	for _, p := range s.Pins {
		if _, err := d.PinAccount(ctx, &pb.PinAccountRequest{User: p.User, Site: p.Site, Uid: p.UID, Gid: p.GID, Username: p.Username}); skipExisting(err) != nil {
			return fmt.Errorf("pin %s at %s: %w", p.User, p.Site, err)
		}
	}
	for _, g := range s.Grants {
		subject := "user:" + g.User
		if g.Project != "" {
			subject = "project:" + g.Project
		}
		until, err := parseTime("until", g.Until)
		if err != nil {
			return err
		}
		if _, err := d.AddGrant(ctx, &pb.AddGrantRequest{Subject: subject, Resource: g.Resource, Actions: g.Actions, Until: until}); skipExisting(err) != nil {
			return fmt.Errorf("grant to %s on %s: %w", subject, g.Resource, err)
		}
	}
	return nil
}

// demoSites are the federation's sites in the order their nodes start.
func demoSites(n int) []string {
	base := []string{"rutgers", "psc", "fabric-dc"}
	for i := len(base); i < n; i++ {
		base = append(base, fmt.Sprintf("site-%d", i+1))
	}
	return base[:n]
}

// freeAddr returns a loopback address with a port free now and not
// handed out before by this process: the kernel may offer a port it just
// gave back, and two of a node's listeners must never share one.
func freeAddr() (string, error) {
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if !handedOut[addr] {
			handedOut[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port found")
}

var (
	handedOutMu sync.Mutex
	handedOut   = map[string]bool{}
)

// federation is a demo federation of in-process broker nodes.
type federation struct {
	nodes    []*node.Node
	cfgs     []*node.Config
	log      *slog.Logger
	insecure bool
	// client is how the demo's administrator talks to the brokers.
	client client.Options
	// env lists the LABFED_* variables env.sh exports besides the address.
	env []string
	// issuer is the demo's OIDC provider, which every broker trusts.
	issuer *oidcissuer.Issuer
	// anon reaches a broker with the CA alone, as a researcher's CLI does.
	anon client.Options
	// verifiers are each site's token verifier (the part of its site
	// agent that checks capability tokens), following the site's broker
	// with an agent certificate.
	verifiers     []*trust.Store
	stopVerifiers []func()
}

// The demo's OIDC issuer: the CLI's client id and the sample people who
// can log in. mallory can log in at the issuer but is not registered in
// the federation.
const (
	demoClientID = "labfed-cli"
	demoPassword = "labfed-demo"
)

var demoPeople = []string{"alice", "bob", "carol", "rhea", "mallory"}

// demoOffers is what each demo site offers, as in testdata/config: the
// microscopes at the first site, a SLURM GPU partition at the second, a
// small GPU node with an older CryoSPARC at the third, so placement has
// choices to explain. Further sites get a GPU workstation.
func demoOffers(i int) string {
	switch i {
	case 0:
		return `instruments:
  - {name: krios-g4, type: TEM, model: Titan Krios G4, controller: "10.20.0.5:5900", raw_data: /data/krios-g4/raw}
  - {name: aquilos, type: cryo-FIB, model: Aquilos 2, controller: "10.20.0.6:5900", raw_data: /data/aquilos/raw}
compute:
  - {name: gpu-ws1, kind: local, gpus: 4, software: {cryosparc: 4.6.2}}
storage:
  - {name: raw, path: /data/krios-g4/raw}
`
	case 1:
		return `compute:
  - {name: bridges2-gpu, kind: slurm, gpus: 64, software: {cryosparc: 4.6.2, relion: "5.0"}, slurm: {partition: GPU-shared}}
`
	case 2:
		return `compute:
  - {name: cloudlet-gpu, kind: local, gpus: 2, software: {cryosparc: 4.5.3}}
`
	}
	return "compute:\n  - {name: gpu-ws, kind: local, gpus: 2, software: {cryosparc: 4.6.2}}\n"
}

// demoSubject is the OIDC subject the demo issuer gives a sample person.
func demoSubject(name string) string { return "urn:labfed-demo:user:" + name }

// startIssuer starts the demo's OIDC issuer and writes its certificate to
// DIR/oidc-ca.pem for the brokers and the CLI to trust.
func (f *federation) startIssuer(dir string) error {
	var users []oidcissuer.User
	for _, n := range demoPeople {
		users = append(users, oidcissuer.User{Username: n, Password: demoPassword, Subject: demoSubject(n), Email: n + "@demo.labfed.example.org", Name: n})
	}
	is, err := oidcissuer.New(oidcissuer.Config{
		Clients: []oidcissuer.Client{{ID: demoClientID, RedirectLoopbackOnly: true}}, Users: users,
		DevicePollInterval: time.Second, Logger: f.log,
	})
	if err != nil {
		return err
	}
	f.issuer = is
	return os.WriteFile(filepath.Join(dir, "oidc-ca.pem"), is.CAPEM(), 0o644)
}

// startFederation starts n sites' brokers. Unless insecure, it first makes
// a federation CA in DIR/ca with a broker certificate per node and an
// administrator certificate for the coordinator, and runs everything over
// mutual TLS as production does.
func startFederation(ctx context.Context, dir string, n int, log *slog.Logger, insecure bool) (*federation, error) {
	f := &federation{log: log, insecure: insecure, client: client.Options{DevInsecure: true}, anon: client.Options{DevInsecure: true}, env: []string{"LABFED_DEV_INSECURE=1"}}
	if err := f.startIssuer(dir); err != nil {
		return f, err
	}
	var ca *pki.CA
	caDir := filepath.Join(dir, "ca")
	if !insecure {
		os.RemoveAll(caDir)
		if err := os.MkdirAll(caDir, 0o700); err != nil {
			return f, err
		}
		var err error
		if ca, err = pki.NewCA("labfed-demo", 30*24*time.Hour); err != nil {
			return f, err
		}
		caCert, caKey, caCRL := caFiles(caDir)
		if err := ca.Save(caCert, caKey); err != nil {
			return f, err
		}
		if err := ca.Revoke(caCRL); err != nil {
			return f, err
		}
		if err := node.NewGossipKeyring(filepath.Join(caDir, "gossip.keys")); err != nil {
			return f, err
		}
		admin := filepath.Join(caDir, "coord")
		if err := issue(ca, pki.Identity{Site: demoSites(1)[0], Kind: pki.KindAdmin, Name: "coord"}, nil, 30*24*time.Hour, admin); err != nil {
			return f, err
		}
		b, err := pki.Load(pki.Files{CA: caCert, Cert: admin + ".crt", Key: admin + ".key", CRL: caCRL})
		if err != nil {
			return f, err
		}
		f.client = client.Options{TLS: b.ClientConfig(pki.KindBroker)}
		anon, err := pki.ClientConfigCAOnly(caCert, pki.KindBroker)
		if err != nil {
			return f, err
		}
		f.anon = client.Options{TLS: anon}
		f.env = []string{"LABFED_CA=" + caCert, "LABFED_CERT=" + admin + ".crt", "LABFED_KEY=" + admin + ".key"}
	}
	for i, site := range demoSites(n) {
		api, err := freeAddr()
		if err != nil {
			return f, err
		}
		raftAddr, err := freeAddr()
		if err != nil {
			return f, err
		}
		lo := 200000 + uint32(i)*100000
		gossipAddr, err := freeAddr()
		if err != nil {
			return f, err
		}
		httpAddr, err := freeAddr()
		if err != nil {
			return f, err
		}
		cfgText := fmt.Sprintf("site: %s\nnode: %s-1\ndata_dir: %s\nlisten:\n  api: %s\n  raft: %s\n  gossip: %s\n  http: %s\nuid_range: %d-%d\ngid_range: %d-%d\n",
			site, site, filepath.Join(dir, site+"-1"), api, raftAddr, gossipAddr, httpAddr, lo, lo+9999, lo, lo+9999)
		cfgText += demoOffers(i)
		if ca != nil {
			prefix := filepath.Join(caDir, site+"-1")
			if err := issue(ca, pki.Identity{Site: site, Kind: pki.KindBroker, Name: site + "-1"}, []string{"127.0.0.1"}, 30*24*time.Hour, prefix); err != nil {
				return f, err
			}
			caCert, _, caCRL := caFiles(caDir)
			cfgText += fmt.Sprintf("tls:\n  ca: %s\n  cert: %s.crt\n  key: %s.key\n  crl: %s\n", caCert, prefix, prefix, caCRL)
			cfgText += fmt.Sprintf("gossip: {keyring: %s}\n", filepath.Join(caDir, "gossip.keys"))
		}
		cfgText += fmt.Sprintf("oidc:\n  issuers:\n    - {url: %q, client_ids: [%s], ca_file: %q}\n", f.issuer.URL(), demoClientID, filepath.Join(dir, "oidc-ca.pem"))
		if i == 0 {
			// The bootstrap registers the federation's first coordinator,
			// whom the administrator certificate above names.
			cfgText += "bootstrap:\n  coordinator: {name: coord, email: coordinator@labfed.example.org}\n"
		}
		cfg, err := node.ParseConfig(site+".yaml", []byte(cfgText))
		if err != nil {
			return f, err
		}
		opts := node.Options{Config: cfg, DevInsecure: insecure, Logger: log, Bootstrap: i == 0}
		if i > 0 {
			opts.Join = []string{f.cfgs[0].Listen.API}
		}
		nd, err := node.Start(ctx, opts)
		if err != nil {
			return f, fmt.Errorf("start %s: %w", site, err)
		}
		f.nodes = append(f.nodes, nd)
		f.cfgs = append(f.cfgs, cfg)
		if err := f.startVerifier(ca, caDir, dir, site, nd.Addr(), log); err != nil {
			return f, err
		}
	}
	return f, nil
}

// startVerifier starts site's token verifier, following the broker at
// addr with an agent certificate and keeping its trust cache in
// DIR/SITE-agent.
func (f *federation) startVerifier(ca *pki.CA, caDir, dir, site, addr string, log *slog.Logger) error {
	opts := client.Options{DevInsecure: true}
	if ca != nil {
		prefix := filepath.Join(caDir, site+"-agent")
		if err := issue(ca, pki.Identity{Site: site, Kind: pki.KindAgent, Name: "agent"}, nil, 30*24*time.Hour, prefix); err != nil {
			return err
		}
		caCert, _, caCRL := caFiles(caDir)
		b, err := pki.Load(pki.Files{CA: caCert, Cert: prefix + ".crt", Key: prefix + ".key", CRL: caCRL})
		if err != nil {
			return err
		}
		opts = client.Options{TLS: b.ClientConfig(pki.KindBroker)}
	}
	cl, err := client.Dial(addr, opts)
	if err != nil {
		return err
	}
	agentDir := filepath.Join(dir, site+"-agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		return err
	}
	os.Remove(filepath.Join(agentDir, "trust.json")) // a fresh federation each run
	st, err := trust.Open(trust.Options{Site: site, Source: cl.TrustSource(), CacheFile: filepath.Join(agentDir, "trust.json"), Logger: log.With("agent", site)})
	if err != nil {
		cl.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { st.Run(ctx); close(done) }()
	f.verifiers = append(f.verifiers, st)
	f.stopVerifiers = append(f.stopVerifiers, func() { cancel(); <-done; cl.Close() })
	return nil
}

// waitReady waits until every node is a Raft peer, answers a
// linearizable read, and has its signing key active in the trust bundle.
func (f *federation) waitReady(ctx context.Context, cl *client.Client) error {
	for {
		resp, err := cl.Cluster.ListPeers(ctx, &pb.ListPeersRequest{})
		if err == nil && len(resp.GetPeers()) == len(f.nodes) {
			if _, err = cl.Directory.ListSites(ctx, &pb.ListSitesRequest{}); err == nil {
				var keys *pb.ListKeysResponse
				if keys, err = cl.Directory.ListKeys(ctx, &pb.ListKeysRequest{}); err == nil {
					active := map[string]bool{}
					for _, k := range keys.GetKeys() {
						if k.GetStatus() == "active" {
							active[k.GetIssuer()] = true
						}
					}
					if len(active) == len(f.nodes) {
						return nil
					}
					err = fmt.Errorf("signing keys active for %d of %d brokers", len(active), len(f.nodes))
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("federation did not become ready: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// index returns the position of the node with Raft id id, or -1.
func (f *federation) index(id string) int {
	for i, c := range f.cfgs {
		if c.Node == id {
			return i
		}
	}
	return -1
}

// verify checks tok at site i's verifier, giving it a moment to hear of
// keys published just now.
func (f *federation) verify(ctx context.Context, i int, tok string, want *capability.Scope) (*capability.Claims, error) {
	for {
		c, err := f.verifiers[i].Verify(tok, want)
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		var re *capability.RefusedError
		if !errors.As(err, &re) || (re.Code != capability.CodeKIDUnknown && re.Code != trust.CodeBrokerLost) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *federation) close() {
	for _, stop := range f.stopVerifiers {
		stop()
	}
	for _, n := range f.nodes {
		if n != nil {
			n.Close()
		}
	}
	if f.issuer != nil {
		f.issuer.Close()
	}
}

// registerDemoIdentities gives the sample people in the directory their
// identity at the demo's issuer, so they can labfed login.
func (f *federation) registerDemoIdentities(ctx context.Context, d pb.DirectoryServiceClient) error {
	users, err := d.ListUsers(ctx, &pb.ListUsersRequest{})
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, u := range users.GetUsers() {
		known[u.GetName()] = true
	}
	for _, n := range demoPeople {
		if !known[n] {
			continue // not in this directory (mallory never is); asking would be a refusal in the audit log
		}
		_, err := d.UpdateUser(ctx, &pb.UpdateUserRequest{Name: n, AddIdentities: []*pb.Identity{{Issuer: f.issuer.URL(), Subject: demoSubject(n)}}})
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("register %s's demo identity: %w", n, err)
		}
	}
	return nil
}

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "start a whole federation on loopback (or, with --scenario, walk its flows and exit)",
		Description: "Starts one broker node per site (rutgers, psc, fabric-dc) in this process on\n" +
			"free loopback ports, bootstraps the federation, loads the sample directory from\n" +
			"--seed, writes DIR/env.sh with the LABFED_* variables a client needs, prints\n" +
			"`ready` and runs until interrupted. Source env.sh in another shell and try\n" +
			"`labfed user list` or `labfed account list --site psc`.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "working `DIR` for the nodes' data and env.sh", Required: true},
			&cli.IntFlag{Name: "sites", Value: 3, Usage: "number of sites (at least 1)"},
			&cli.BoolFlag{Name: "scenario", Usage: "walk the flows end to end, printing each step; exit 0 only if every step worked"},
			&cli.StringFlag{Name: "seed", Value: filepath.Join("testdata", "demo", "directory.yaml"), Usage: "sample directory `FILE` to load"},
			&cli.StringFlag{Name: "log-level", Value: "error", Usage: "debug, info, warn or error"},
			&cli.BoolFlag{Name: "dev-insecure", Usage: "run without TLS (loopback only), as labfed serve --dev-insecure does"},
		},
		Action: func(c *cli.Context) error {
			if c.Int("sites") < 1 {
				return errors.New("--sites must be at least 1")
			}
			sd, err := loadSeed(c.String("seed"))
			if err != nil {
				return err
			}
			log, err := newLogger(c.String("log-level"))
			if err != nil {
				return err
			}
			dir, err := filepath.Abs(c.String("dir"))
			if err != nil {
				return err
			}
			// Each run starts a fresh federation in DIR.
			for _, s := range demoSites(c.Int("sites")) {
				os.RemoveAll(filepath.Join(dir, s+"-1"))
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			ctx := c.Context
			f, err := startFederation(ctx, dir, c.Int("sites"), log, c.Bool("dev-insecure"))
			defer f.close()
			if err != nil {
				return err
			}
			cl, err := client.Dial(f.nodes[0].Addr(), f.client)
			if err != nil {
				return err
			}
			defer cl.Close()
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			if err := f.waitReady(rctx, cl); err != nil {
				return err
			}
			if err := sd.apply(rctx, cl.Directory); err != nil {
				return fmt.Errorf("load %s: %w", c.String("seed"), err)
			}
			if err := f.registerDemoIdentities(rctx, cl.Directory); err != nil {
				return err
			}
			env := fmt.Sprintf("# labfed demo federation: source this file to talk to site %s as the federation's coordinator.\nexport LABFED_ADDR=%s\n", f.cfgs[0].Site, f.nodes[0].Addr())
			for _, e := range f.env {
				env += "export " + e + "\n"
			}
			env += "# labfed login keeps its session here; while it is valid it is used instead of the certificate (labfed logout).\n"
			env += "export LABFED_SESSION=" + filepath.Join(dir, "session.json") + "\n"
			env += "export LABFED_OIDC_CA=" + filepath.Join(dir, "oidc-ca.pem") + "\n"
			scheme := "https"
			if f.insecure {
				scheme = "http"
			}
			for i, n := range f.nodes {
				env += fmt.Sprintf("# %s: export LABFED_ADDR=%s   (trust bundle: %s://%s/.well-known/jwks.json)\n", f.cfgs[i].Site, n.Addr(), scheme, n.JWKSAddr())
			}
			if err := os.WriteFile(filepath.Join(dir, "env.sh"), []byte(env), 0o600); err != nil {
				return err
			}
			if c.Bool("scenario") {
				return runScenario(ctx, c.App.Writer, f)
			}
			fmt.Fprintf(c.App.Writer, "OIDC issuer %s: labfed login as alice, bob, carol (researchers) or rhea (site-admin:%s), password %s\n", f.issuer.URL(), f.cfgs[0].Site, demoPassword)
			fmt.Fprintln(c.App.Writer, "ready")
			<-ctx.Done()
			return nil
		},
	}
}

// runScenario walks the directory flows against a running demo federation.
func runScenario(ctx context.Context, w io.Writer, f *federation) error {
	step := 0
	run := func(what string, fn func() (string, error)) error {
		step++
		out, err := fn()
		if err != nil {
			fmt.Fprintf(w, "step %d FAIL %s: %s\n", step, what, errorLine(err))
			return fmt.Errorf("scenario step %d (%s) failed", step, what)
		}
		fmt.Fprintf(w, "step %d ok   %s: %s\n", step, what, out)
		return nil
	}
	clients := make([]*client.Client, len(f.nodes))
	for i, n := range f.nodes {
		cl, err := client.Dial(n.Addr(), f.client)
		if err != nil {
			return err
		}
		defer cl.Close()
		clients[i] = cl
	}
	last := clients[len(clients)-1]
	var stopped string // id of the node stopped by the failover step
	var alice *client.Credential
	var aliceToken *pb.IssueTokenResponse // issued, then revoked
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// Where the log stood before the scenario: its steps' entries follow.
	startSeq, err := auditHead(ctx, clients[0])
	if err != nil {
		return err
	}
	steps := []struct {
		what string
		fn   func() (string, error)
	}{
		{"every site's node is a raft peer", func() (string, error) {
			r, err := last.Cluster.ListPeers(ctx, &pb.ListPeersRequest{})
			if err != nil {
				return "", err
			}
			var ids []string
			for _, p := range r.GetPeers() {
				ids = append(ids, p.GetId()+"/"+p.GetSuffrage())
			}
			if len(ids) != len(f.nodes) {
				return "", fmt.Errorf("%d peers, want %d", len(ids), len(f.nodes))
			}
			return strings.Join(ids, " "), nil
		}},
		{"every site's offers reach the last site through gossip", func() (string, error) {
			var ins *pb.ListInstrumentsResponse
			var cmp *pb.ListComputeResponse
			for {
				var err error
				if ins, err = last.Discovery.ListInstruments(ctx, &pb.ListInstrumentsRequest{}); err != nil {
					return "", err
				}
				if cmp, err = last.Discovery.ListCompute(ctx, &pb.ListComputeRequest{Near: f.cfgs[0].Site}); err != nil {
					return "", err
				}
				reachable := 0
				for _, t := range cmp.GetTargets() {
					if t.GetStatus() != broker.StatusUnreachable {
						reachable++
					}
				}
				if len(ins.GetInstruments()) >= 2 && reachable >= len(f.nodes) {
					break
				}
				if ctx.Err() != nil {
					return "", fmt.Errorf("after 90 s the last site sees %d instruments and %d compute targets", len(ins.GetInstruments()), len(cmp.GetTargets()))
				}
				time.Sleep(100 * time.Millisecond)
			}
			var ids []string
			for _, in := range ins.GetInstruments() {
				ids = append(ids, in.GetId()+" ("+in.GetType()+", "+in.GetStatus()+")")
			}
			for _, t := range cmp.GetTargets() {
				ids = append(ids, fmt.Sprintf("%s (%d GPUs free)", t.GetId(), t.GetGpusFree()))
			}
			return strings.Join(ids, ", "), nil
		}},
		{"the first site puts its microscope into maintenance; every site sees it", func() (string, error) {
			st := broker.StatusMaintenance
			id := f.cfgs[0].Site + "/krios-g4"
			start := time.Now()
			if _, err := clients[0].Discovery.ReportStatus(ctx, &pb.ReportStatusRequest{Id: id, Status: &st}); err != nil {
				return "", err
			}
			for _, cl := range clients {
				for {
					r, err := cl.Discovery.ListInstruments(ctx, &pb.ListInstrumentsRequest{Status: st})
					if err != nil {
						return "", err
					}
					if len(r.GetInstruments()) == 1 {
						break
					}
					if ctx.Err() != nil {
						return "", fmt.Errorf("a node never showed %s in maintenance", id)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			took := time.Since(start)
			st = broker.StatusAvailable
			_, err := clients[0].Discovery.ReportStatus(ctx, &pb.ReportStatusRequest{Id: id, Status: &st})
			return fmt.Sprintf("%s in maintenance on all %d nodes after %s; available again", id, len(clients), took.Round(time.Millisecond)), err
		}},
		{"analytics for data at the first site is placed, and the choice explained", func() (string, error) {
			r, err := last.Discovery.Place(ctx, &pb.PlaceRequest{DataSite: f.cfgs[0].Site, Gpus: 2, Software: map[string]string{"cryosparc": "4.6.2"}})
			if err != nil {
				return "", err
			}
			if len(r.GetRanked()) == 0 {
				return "", fmt.Errorf("no target ranked; excluded: %v", r.GetExcluded())
			}
			out := "first: " + r.GetRanked()[0].GetReason()
			for _, e := range r.GetExcluded() {
				out += "; left out " + e.GetReason()
			}
			return out, nil
		}},
		{"a researcher at a college without a microscope is registered through the last site", func() (string, error) {
			u, err := last.Directory.AddUser(ctx, &pb.AddUserRequest{Name: "erin", Email: "erin@small-college.edu", Home: f.cfgs[len(f.cfgs)-1].Site})
			if err != nil {
				return "", err
			}
			return "user " + u.GetName() + " home " + u.GetHome(), nil
		}},
		{"a grant on the first site's microscope allocates erin's POSIX account there", func() (string, error) {
			g, err := last.Directory.AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:erin", Resource: f.cfgs[0].Site + "/krios-g4", Actions: []string{broker.ActionInstrumentView}})
			if err != nil {
				return "", err
			}
			a, err := clients[0].Directory.GetAccount(ctx, &pb.GetAccountRequest{User: "erin", Site: f.cfgs[0].Site})
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s; account %s uid %d gid %d", g.GetId(), a.GetUsername(), a.GetUid(), a.GetGid()), nil
		}},
		{"an overlapping grant is refused and changes nothing", func() (string, error) {
			_, err := last.Directory.AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:erin", Resource: f.cfgs[0].Site + "/krios-g4", Actions: []string{broker.ActionInstrumentView}})
			if status.Code(err) != codes.AlreadyExists {
				return "", fmt.Errorf("got %v, want AlreadyExists", err)
			}
			return status.Convert(err).Message(), nil
		}},
		{"a pinned LDAP uid conflicting with erin's is refused", func() (string, error) {
			a, err := clients[0].Directory.GetAccount(ctx, &pb.GetAccountRequest{User: "erin", Site: f.cfgs[0].Site})
			if err != nil {
				return "", err
			}
			_, err = clients[0].Directory.PinAccount(ctx, &pb.PinAccountRequest{User: "coord", Site: f.cfgs[0].Site, Uid: a.GetUid()})
			if code := status.Code(err); code != codes.AlreadyExists {
				return "", fmt.Errorf("got %v, want AlreadyExists", err)
			}
			return status.Convert(err).Message(), nil
		}},
		{"alice logs in through the site's OIDC issuer (authorization code with PKCE)", func() (string, error) {
			cred, err := f.demoLogin(ctx, f.nodes[0].Addr(), "alice", false)
			if err != nil {
				return "", err
			}
			alice = cred
			w, err := f.as(alice, f.nodes[0].Addr(), func(cl *client.Client) (any, error) { return cl.Login.WhoAmI(ctx, &pb.WhoAmIRequest{}) })
			if err != nil {
				return "", err
			}
			who := w.(*pb.WhoAmIResponse)
			return fmt.Sprintf("session %s for %s (%s) until %s", who.GetSession(), who.GetUser(), strings.Join(who.GetRoles(), ","), who.GetExpires().AsTime().Format(time.RFC3339)), nil
		}},
		{"alice sees her own grants but, as a researcher, may not add a site", func() (string, error) {
			g, err := f.as(alice, f.nodes[1].Addr(), func(cl *client.Client) (any, error) { return cl.Directory.ListGrants(ctx, &pb.ListGrantsRequest{}) })
			if err != nil {
				return "", err
			}
			_, err = f.as(alice, f.nodes[1].Addr(), func(cl *client.Client) (any, error) {
				r := &pb.IDRange{Lo: 900000, Hi: 900999}
				return cl.Directory.AddSite(ctx, &pb.AddSiteRequest{Name: "rogue", UidRange: r, GidRange: r})
			})
			if status.Code(err) != codes.PermissionDenied {
				return "", fmt.Errorf("AddSite as alice: got %v, want PermissionDenied", err)
			}
			return fmt.Sprintf("%d grant(s) visible; %s", len(g.(*pb.ListGrantsResponse).GetGrants()), status.Convert(err).Message()), nil
		}},
		{"bob logs in from a headless host with the device flow", func() (string, error) {
			cred, err := f.demoLogin(ctx, f.nodes[len(f.nodes)-1].Addr(), "bob", true)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("session %s for %s", cred.Session, cred.User), nil
		}},
		{"an identity the federation does not know is refused", func() (string, error) {
			_, err := f.demoLogin(ctx, f.nodes[0].Addr(), "mallory", false)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not registered in the federation; ask your site administrator") {
				return "", fmt.Errorf("got %v, want PermissionDenied: not registered in the federation", err)
			}
			return status.Convert(err).Message(), nil
		}},
		{"alice gets a token to operate the microscope and the microscope's site verifies it offline", func() (string, error) {
			var tok *pb.IssueTokenResponse
			for {
				t, err := f.as(alice, f.nodes[len(f.nodes)-1].Addr(), func(cl *client.Client) (any, error) {
					return pb.NewTokenServiceClient(cl.Conn()).Issue(ctx, &pb.IssueTokenRequest{Scope: "instrument.operate:" + f.cfgs[0].Site + "/krios-g4"})
				})
				if err == nil {
					tok = t.(*pb.IssueTokenResponse)
					break
				}
				if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
					return "", err
				}
				time.Sleep(100 * time.Millisecond) // signing keys are published just after start
			}
			want, _ := capability.ParseScope("instrument.operate:" + f.cfgs[0].Site + "/krios-g4")
			c, err := f.verify(ctx, 0, tok.GetToken(), &want)
			if err != nil {
				return "", err
			}
			refusal := "the only site"
			if len(f.verifiers) > 1 {
				_, err := f.verifiers[1].Verify(tok.GetToken(), &want)
				var re *capability.RefusedError
				if !errors.As(err, &re) || re.Code != capability.CodeAud {
					return "", fmt.Errorf("%s's verifier: %v, want an aud refusal", f.cfgs[1].Site, err)
				}
				refusal = "refused by " + f.cfgs[1].Site + "'s (" + re.Code + ")"
			}
			aliceToken = tok
			return fmt.Sprintf("jti %s signed by %s for %s (uid %d at %s) until %s; accepted by %s's agent, %s", c.ID[:8], c.Issuer, c.Subject, c.POSIX.UID, c.Audience, c.Expiry.Format(time.RFC3339), f.cfgs[0].Site, refusal), nil
		}},
		{"a coordinator revokes that token at another broker; the microscope's agent refuses it within moments", func() (string, error) {
			start := time.Now()
			if _, err := pb.NewTokenServiceClient(clients[len(clients)-1].Conn()).Revoke(ctx, &pb.RevokeTokensRequest{Jti: aliceToken.GetJti(), Reason: "demo: session over"}); err != nil {
				return "", err
			}
			for {
				_, err := f.verifiers[0].Verify(aliceToken.GetToken(), nil)
				var re *capability.RefusedError
				if errors.As(err, &re) && re.Code == capability.CodeRevoked {
					return fmt.Sprintf("refused %v after the request: %s", time.Since(start).Round(time.Millisecond), re.Reason), nil
				}
				if time.Since(start) > 2*time.Second {
					return "", fmt.Errorf("still %v 2 s after the revocation", err)
				}
				time.Sleep(time.Millisecond)
			}
		}},
		{"the broker that signs rotates its key; tokens signed before and after both verify", func() (string, error) {
			lastAddr := f.nodes[len(f.nodes)-1].Addr()
			issueOne := func() (string, error) {
				t, err := f.as(alice, lastAddr, func(cl *client.Client) (any, error) {
					return pb.NewTokenServiceClient(cl.Conn()).Issue(ctx, &pb.IssueTokenRequest{Scope: "instrument.operate:" + f.cfgs[0].Site + "/krios-g4"})
				})
				if err != nil {
					return "", err
				}
				return t.(*pb.IssueTokenResponse).GetToken(), nil
			}
			before, err := issueOne()
			if err != nil {
				return "", err
			}
			// Issue reads the grants linearizably, so the leader decides
			// and signs: rotate the key of the broker that signed.
			_, claims, err := inspectToken(before)
			if err != nil {
				return "", err
			}
			signer := f.index(fmt.Sprint(claims["iss"]))
			if signer < 0 {
				return "", fmt.Errorf("token issued by %v, not a demo broker", claims["iss"])
			}
			cl, err := client.Dial(f.nodes[signer].Addr(), f.client)
			if err != nil {
				return "", err
			}
			defer cl.Close()
			r, err := cl.Directory.RotateKey(ctx, &pb.RotateKeyRequest{})
			if err != nil {
				return "", err
			}
			after, err := issueOne()
			if err != nil {
				return "", err
			}
			var kids []string
			for _, tok := range []string{before, after} {
				c, err := f.verify(ctx, 0, tok, nil)
				if err != nil {
					return "", err
				}
				h, _, _ := inspectToken(tok)
				kids = append(kids, fmt.Sprintf("%s (jti %s)", h["kid"], c.ID[:8]))
			}
			return fmt.Sprintf("%s retiring, %s active; %s's agent accepts %s", r.GetOldKid(), r.GetKey().GetKid(), f.cfgs[0].Site, strings.Join(kids, " and ")), nil
		}},
		{"carol, without a grant to operate it, is refused with the reason", func() (string, error) {
			_, err := clients[0].Login.WhoAmI(ctx, &pb.WhoAmIRequest{}) // the coordinator asks on carol's behalf
			if err != nil {
				return "", err
			}
			_, err = pb.NewTokenServiceClient(clients[0].Conn()).Issue(ctx, &pb.IssueTokenRequest{Scope: "instrument.operate:" + f.cfgs[0].Site + "/krios-g4", User: "carol"})
			if status.Code(err) != codes.PermissionDenied {
				return "", fmt.Errorf("got %v, want PermissionDenied", err)
			}
			return status.Convert(err).Message(), nil
		}},
		{"alice logs out; her session stops working on every node", func() (string, error) {
			if _, err := f.as(alice, f.nodes[0].Addr(), func(cl *client.Client) (any, error) { return cl.Login.Logout(ctx, &pb.LogoutRequest{}) }); err != nil {
				return "", err
			}
			// Followers learn of the logout when they apply it: within
			// one replication round trip.
			start := time.Now()
			for _, n := range f.nodes {
				for {
					_, err := f.as(alice, n.Addr(), func(cl *client.Client) (any, error) { return cl.Login.WhoAmI(ctx, &pb.WhoAmIRequest{}) })
					if status.Code(err) == codes.Unauthenticated {
						break
					}
					if time.Since(start) > 2*time.Second {
						return "", fmt.Errorf("WhoAmI at %s 2s after logout: got %v, want Unauthenticated", n.Addr(), err)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			return fmt.Sprintf("refused on all %d nodes within %s", len(f.nodes), time.Since(start).Round(time.Millisecond)), nil
		}},
		{"every replica holds the same directory", func() (string, error) {
			return sameHash(ctx, clients)
		}},
		{"the leader stops; a write through another site still succeeds", func() (string, error) {
			r, err := last.Cluster.ListPeers(ctx, &pb.ListPeersRequest{})
			if err != nil {
				return "", err
			}
			for _, p := range r.GetPeers() {
				if p.GetLeader() {
					stopped = p.GetId()
				}
			}
			i := f.index(stopped)
			if i < 0 || len(f.nodes) < 3 {
				return "", fmt.Errorf("need a leader among at least 3 nodes; have %d nodes, leader %q", len(f.nodes), stopped)
			}
			f.nodes[i].Close()
			f.nodes[i] = nil
			writer := clients[(i+1)%len(clients)]
			start := time.Now()
			u, err := writer.Directory.AddUser(ctx, &pb.AddUserRequest{Name: "frank", Email: "frank@small-college.edu", Home: f.cfgs[len(f.cfgs)-1].Site})
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("stopped %s; added user %s in %s while a new leader was elected", stopped, u.GetName(), time.Since(start).Round(time.Millisecond)), nil
		}},
		{"the stopped site's offers are shown as unreachable elsewhere", func() (string, error) {
			i := f.index(stopped)
			site := f.cfgs[i].Site
			watcher := clients[(i+1)%len(clients)]
			for {
				r, err := watcher.Discovery.ListCompute(ctx, &pb.ListComputeRequest{})
				if err != nil {
					return "", err
				}
				for _, t := range r.GetTargets() {
					if t.GetSite() == site && t.GetStatus() == broker.StatusUnreachable {
						return fmt.Sprintf("%s: %s", t.GetId(), t.GetStatus()), nil
					}
				}
				if ctx.Err() != nil {
					return "", fmt.Errorf("%s's targets never became unreachable: %v", site, r.GetTargets())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}},
		{"the stopped node restarts from its data and catches up", func() (string, error) {
			i := f.index(stopped)
			n, err := node.Start(ctx, node.Options{Config: f.cfgs[i], DevInsecure: f.insecure, Logger: f.log})
			if err != nil {
				return "", err
			}
			f.nodes[i] = n
			u, err := clients[i].Directory.GetUser(ctx, &pb.GetUserRequest{Name: "frank", Read: &pb.ReadOptions{Stale: true}})
			for err != nil && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				u, err = clients[i].Directory.GetUser(ctx, &pb.GetUserRequest{Name: "frank", Read: &pb.ReadOptions{Stale: true}})
			}
			if err != nil {
				return "", err
			}
			h, err := sameHash(ctx, clients)
			return fmt.Sprintf("%s sees user %s; %s", stopped, u.GetName(), h), err
		}},
		{"the restarted site's offers are back everywhere", func() (string, error) {
			site := f.cfgs[f.index(stopped)].Site
			start := time.Now()
			for _, cl := range clients {
				for {
					r, err := cl.Discovery.ListCompute(ctx, &pb.ListComputeRequest{})
					if err != nil {
						return "", err
					}
					back := false
					for _, t := range r.GetTargets() {
						back = back || (t.GetSite() == site && t.GetStatus() == broker.StatusAvailable)
					}
					if back {
						break
					}
					if ctx.Err() != nil {
						return "", fmt.Errorf("%s's targets did not come back: %v", site, r.GetTargets())
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			return fmt.Sprintf("%s available on all %d nodes %s after the catch-up", site, len(clients), time.Since(start).Round(time.Millisecond)), nil
		}},
		{"every decision above is in the audit log, chained, the same on every node", func() (string, error) {
			return checkScenarioAudit(ctx, clients, startSeq)
		}},
		{"a coordinator reports usage by site", func() (string, error) {
			r, err := pb.NewAuditServiceClient(clients[0].Conn()).Usage(ctx, &pb.UsageRequest{By: "site"})
			if err != nil {
				return "", err
			}
			var parts []string
			for _, row := range r.GetRows() {
				parts = append(parts, fmt.Sprintf("%s: %d tokens, %d sessions, %.1f instrument h, %.1f GPU h", row.GetKey(), row.GetTokens(), row.GetSessions(), row.GetInstrumentHours(), row.GetGpuHours()))
			}
			return strings.Join(parts, "; "), nil
		}},
	}
	if !f.insecure {
		steps = append([]struct {
			what string
			fn   func() (string, error)
		}{{"a client with the federation CA but no certificate of its own is refused", func() (string, error) {
			caCert, _, _ := caFiles(filepath.Join(filepath.Dir(f.cfgs[0].DataDir), "ca"))
			t, err := pki.ClientConfigCAOnly(caCert, pki.KindBroker)
			if err != nil {
				return "", err
			}
			anon, err := client.Dial(f.nodes[0].Addr(), client.Options{TLS: t})
			if err != nil {
				return "", err
			}
			defer anon.Close()
			_, err = anon.Directory.ListUsers(ctx, &pb.ListUsersRequest{})
			if status.Code(err) != codes.Unauthenticated {
				return "", fmt.Errorf("got %v, want Unauthenticated", err)
			}
			return status.Convert(err).Message(), nil
		}}}, steps...)
	}
	for _, s := range steps {
		if err := run(s.what, s.fn); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "scenario passed")
	return nil
}

// auditHead is the last sequence number of the audit log.
func auditHead(ctx context.Context, cl *client.Client) (uint64, error) {
	r, err := pb.NewAuditServiceClient(cl.Conn()).Verify(ctx, &pb.VerifyAuditRequest{})
	if err != nil {
		return 0, err
	}
	return r.GetHeadSeq(), nil
}

// scenarioAudit is what the scenario's steps must leave in the audit
// log: entries per action and decision.
var scenarioAudit = map[string]int{
	"user.add:allow": 2, "grant.add:allow": 1, "grant.add:deny": 1, "account.pin:deny": 1,
	"login:allow": 2, "login:deny": 1, "logout:allow": 1, "access.refused:deny": 1,
	"token.issue:allow": 3, "token.issue:deny": 1, "token.revoke:allow": 1, "key.publish:allow": 1,
}

// checkEntryFields checks what connects an entry to its decision.
func checkEntryFields(e *pb.AuditEntry) error {
	switch {
	case e.GetActor() == "" || e.GetHash() == "" || e.GetPrevHash() == "":
		return fmt.Errorf("entry %d has no actor or hash", e.GetSeq())
	case e.GetAction() == "token.issue" && (e.GetSite() == "" || e.GetResource() == "" || e.GetSubject() == ""):
		return fmt.Errorf("token entry %d does not name its site, resource and user", e.GetSeq())
	case e.GetAction() == "token.issue" && !strings.Contains(e.GetSource(), "/broker/"):
		return fmt.Errorf("token entry %d does not name the broker that decided (source %q)", e.GetSeq(), e.GetSource())
	case e.GetAction() == "token.issue" && e.GetDecision() == "allow" && (e.GetToken() == "" || len(e.GetGrants()) == 0):
		return fmt.Errorf("issued-token entry %d does not name its jti and grants", e.GetSeq())
	case e.GetAction() == "token.issue" && e.GetDecision() == "deny" && e.GetReason() == "":
		return fmt.Errorf("refused-token entry %d has no reason", e.GetSeq())
	case e.GetAction() == "login" && e.GetDecision() == "deny" && !strings.HasPrefix(e.GetActor(), "oidc:"):
		return fmt.Errorf("refused-login entry %d does not name the identity", e.GetSeq())
	}
	return nil
}

// checkScenarioAudit reads the entries written since startSeq and checks
// them against scenarioAudit, then has every node verify its chain.
func checkScenarioAudit(ctx context.Context, clients []*client.Client, startSeq uint64) (string, error) {
	ac := pb.NewAuditServiceClient(clients[0].Conn())
	r, err := ac.Query(ctx, &pb.AuditQueryRequest{After: startSeq, Limit: 10000})
	if err != nil {
		return "", err
	}
	got := map[string]int{}
	for _, e := range r.GetEntries() {
		got[e.GetAction()+":"+e.GetDecision()]++
		if err := checkEntryFields(e); err != nil {
			return "", err
		}
	}
	if !maps.Equal(got, scenarioAudit) {
		return "", fmt.Errorf("entries per action %v, want %v", got, scenarioAudit)
	}
	keys := slices.Sorted(maps.Keys(got))
	var counts []string
	for _, k := range keys {
		counts = append(counts, fmt.Sprintf("%s=%d", k, got[k]))
	}
	var heads []string
	for _, cl := range clients {
		for {
			v, err := pb.NewAuditServiceClient(cl.Conn()).Verify(ctx, &pb.VerifyAuditRequest{})
			if err != nil {
				return "", err
			}
			if !v.GetIntact() {
				return "", fmt.Errorf("chain broken at entry %d: %s", v.GetBadSeq(), v.GetReason())
			}
			if len(heads) == 0 || v.GetHeadHash() == heads[0] || ctx.Err() != nil {
				heads = append(heads, v.GetHeadHash())
				break
			}
			time.Sleep(50 * time.Millisecond) // a follower still applying
		}
	}
	for _, h := range heads {
		if h != heads[0] {
			return "", fmt.Errorf("audit heads differ between nodes: %v", heads)
		}
	}
	return fmt.Sprintf("%d entries: %s; chain intact on all %d nodes, head %s", len(r.GetEntries()), strings.Join(counts, " "), len(clients), heads[0][:12]), nil
}

// demoLogin logs a sample person in through the broker at addr, acting as
// their browser (or, with device, as the other device they approve on).
func (f *federation) demoLogin(ctx context.Context, addr, who string, device bool) (*client.Credential, error) {
	cl, err := client.Dial(addr, f.anon)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hc := f.issuer.Client()
	cred, err := runLogin(ctx, cl, loginParams{
		device: device, wait: 30 * time.Second, timeout: 10 * time.Second, http: hc,
		open: func(url string) error {
			go func() {
				if err := oidcissuer.Browse(hc, url, who, demoPassword); err != nil {
					cancel(fmt.Errorf("browser: %w", err))
				}
			}()
			return nil
		},
		prompt: func(_, code, _ string) {
			go func() {
				if err := f.issuer.ApproveDevice(code, who, demoPassword); err != nil {
					cancel(fmt.Errorf("approve the device: %w", err))
				}
			}()
		},
	})
	if cause := context.Cause(ctx); err != nil && cause != nil && cause != context.Canceled {
		return nil, cause
	}
	return cred, err
}

// as runs fn with a client of the broker at addr that presents cred, as
// the CLI does after labfed login.
func (f *federation) as(cred *client.Credential, addr string, fn func(*client.Client) (any, error)) (any, error) {
	o := f.anon
	o.Session = cred.Token
	cl, err := client.Dial(addr, o)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return fn(cl)
}

// sameHash waits until every node reports the same state hash.
func sameHash(ctx context.Context, clients []*client.Client) (string, error) {
	for {
		var hashes []string
		for _, cl := range clients {
			st, err := cl.Cluster.Status(ctx, &pb.StatusRequest{})
			if err != nil {
				return "", err
			}
			hashes = append(hashes, st.GetStateHash())
		}
		same := true
		for _, h := range hashes {
			same = same && h == hashes[0]
		}
		if same {
			return "state hash " + hashes[0][:16] + " on all nodes", nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("replicas still differ: %v", hashes)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
