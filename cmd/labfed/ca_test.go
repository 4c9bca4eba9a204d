package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/cmd/labfed/internal/node"
)

// mustRun runs the command line and fails the test if it fails.
func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, _, err := runCLI(args...)
	if err != nil {
		t.Fatalf("labfed %s = %s, want success", strings.Join(args, " "), errorLine(err))
	}
	return out
}

// caInit runs labfed ca init in a new directory and returns it.
func caInit(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, "ca", "init", "--dir", dir)
	return dir
}

// checkMode checks a file's permission bits.
func checkMode(t testing.TB, file string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Errorf("stat %s: %v", file, err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %v, want %v", file, got, want)
	}
}

// crlSerials returns the serial numbers a CRL file lists, after checking
// that the CA in caFile signed it.
func crlSerials(t testing.TB, crlFile, caFile string) []string {
	t.Helper()
	b, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	if p == nil || p.Type != "X509 CRL" {
		t.Fatalf("%s holds no PEM X509 CRL block", crlFile)
	}
	rl, err := x509.ParseRevocationList(p.Bytes)
	if err != nil {
		t.Fatalf("ParseRevocationList(%s) = %v", crlFile, err)
	}
	ca, err := pki.LoadCA(caFile, strings.TrimSuffix(caFile, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CRL %s: CheckSignatureFrom(CA) = %v", crlFile, err)
	}
	var out []string
	for _, e := range rl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.String())
	}
	return out
}

func certSerial(t testing.TB, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pki.CertSerial(b)
	if err != nil {
		t.Fatalf("CertSerial(%s) = %v", certFile, err)
	}
	return s.String()
}

// loadIdentity loads a holder's files with pki.Load and returns its
// identity and certificate.
func loadIdentity(t testing.TB, files pki.Files) (pki.Identity, *x509.Certificate) {
	t.Helper()
	b, err := pki.Load(files)
	if err != nil {
		t.Fatalf("pki.Load(%s) = %v", files.Cert, err)
	}
	return b.Identity(), b.Certificate().Leaf
}

// snapshot returns the regular files under root and their contents, to
// check that a failed command changed none of them.
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[path] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestCAInit(t *testing.T) {
	isolateEnv(t)
	dir := filepath.Join(t.TempDir(), "ca")
	out := mustRun(t, "ca", "init", "--dir", dir, "--federation", "cryo-em")
	caCert, caKey, caCRL := caFiles(dir)
	if !strings.Contains(out, caCert) || !strings.Contains(out, caKey) {
		t.Errorf("ca init printed %q, want it to name %s and %s", out, caCert, caKey)
	}
	checkMode(t, caKey, 0o600)
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		t.Fatalf("pki.LoadCA after ca init = %v", err)
	}
	if got, want := ca.Cert.Subject.CommonName, "cryo-em federation CA"; got != want {
		t.Errorf("CA common name = %q, want %q", got, want)
	}
	if got := crlSerials(t, caCRL, caCert); len(got) != 0 {
		t.Errorf("CRL after ca init lists %v, want an empty list", got)
	}

	before := snapshot(t, dir)
	_, _, err = runCLI("ca", "init", "--dir", dir)
	if err == nil || !strings.Contains(errorLine(err), "already exists") {
		t.Errorf("second ca init --dir %s = %v, want an error containing %q", dir, err, "already exists")
	}
	if after := snapshot(t, dir); !sameFiles(before, after) {
		t.Errorf("second ca init changed the CA directory's files")
	}
}

func TestCAIssueAndRevoke(t *testing.T) {
	isolateEnv(t)
	dir := caInit(t)
	caCert, _, caCRL := caFiles(dir)

	out := mustRun(t, "ca", "issue", "--dir", dir, "--site", "rutgers", "--kind", "broker", "--name", "rutgers-1", "--host", "127.0.0.1")
	prefix := filepath.Join(dir, "rutgers-broker-rutgers-1")
	if !strings.Contains(out, "rutgers/broker/rutgers-1") || !strings.Contains(out, prefix+".crt") {
		t.Errorf("ca issue printed %q, want the identity and %s.crt", out, prefix)
	}
	checkMode(t, prefix+".key", 0o600)
	broker := pki.Files{CA: caCert, Cert: prefix + ".crt", Key: prefix + ".key", CRL: caCRL}
	id, leaf := loadIdentity(t, broker)
	if want := (pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}); id != want {
		t.Errorf("identity of %s = %v, want %v", broker.Cert, id, want)
	}
	if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		t.Errorf("IP SANs of %s = %v, want 127.0.0.1 among them", broker.Cert, leaf.IPAddresses)
	}

	// Issuing again never overwrites a key.
	before := snapshot(t, dir)
	_, _, err := runCLI("ca", "issue", "--dir", dir, "--site", "rutgers", "--kind", "broker", "--name", "rutgers-1")
	if err == nil || !strings.Contains(errorLine(err), "already exists") {
		t.Errorf("ca issue of an existing holder = %v, want an error containing %q", err, "already exists")
	}
	if after := snapshot(t, dir); !sameFiles(before, after) {
		t.Errorf("a refused ca issue changed the CA directory's files")
	}

	adminPrefix := filepath.Join(t.TempDir(), "alice")
	mustRun(t, "ca", "issue", "--dir", dir, "--site", "rutgers", "--kind", "admin", "--name", "alice", "--out", adminPrefix)
	checkMode(t, adminPrefix+".key", 0o600)
	admin := pki.Files{CA: caCert, Cert: adminPrefix + ".crt", Key: adminPrefix + ".key", CRL: caCRL}
	if id, _ := loadIdentity(t, admin); id.String() != "rutgers/admin/alice" {
		t.Errorf("identity of %s = %v, want rutgers/admin/alice", admin.Cert, id)
	}

	serial := certSerial(t, broker.Cert)
	out = mustRun(t, "ca", "revoke", "--dir", dir, "--cert", broker.Cert)
	if !strings.Contains(out, serial) {
		t.Errorf("ca revoke --cert %s printed %q, want the serial %s", broker.Cert, out, serial)
	}
	if got := crlSerials(t, caCRL, caCert); !slices.Equal(got, []string{serial}) {
		t.Errorf("CRL after revoking %s lists %v, want [%s]", broker.Cert, got, serial)
	}
	if _, err := pki.Load(broker); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("pki.Load(revoked %s) = %v, want an error saying it is revoked", broker.Cert, err)
	}
	if _, _, err := runCLI("ca", "revoke", "--dir", dir, "--cert", broker.Cert); err != nil {
		t.Errorf("revoking %s again = %v, want success (harmless)", broker.Cert, err)
	}

	adminSerial := certSerial(t, admin.Cert)
	mustRun(t, "ca", "revoke", "--dir", dir, "--serial", adminSerial)
	want := []string{serial, adminSerial}
	if got := crlSerials(t, caCRL, caCert); !slices.Equal(got, want) {
		t.Errorf("CRL after revoking --serial %s lists %v, want %v", adminSerial, got, want)
	}
}

func TestInitWithCA(t *testing.T) {
	isolateEnv(t)
	caDir := caInit(t)
	caCert, _, _ := caFiles(caDir)
	dir := filepath.Join(t.TempDir(), "psc")
	api, raftAddr := freeLoopback(t), freeLoopback(t)
	out := mustRun(t, "init", "--site", "psc", "--dir", dir, "--ca-dir", caDir, "--api", api, "--raft", raftAddr)
	cfgPath := filepath.Join(dir, "psc-1.yaml")
	if !strings.Contains(out, cfgPath) {
		t.Errorf("init printed %q, want it to name %s", out, cfgPath)
	}
	cfg, err := node.LoadConfig(cfgPath)
	if err != nil {
		t.Fatalf("node.LoadConfig(%s) = %v", cfgPath, err)
	}
	if cfg.Site != "psc" || cfg.Node != "psc-1" || cfg.Listen.API != api || cfg.Listen.Raft != raftAddr {
		t.Errorf("config %s: site %q node %q api %q raft %q, want psc, psc-1, %s, %s", cfgPath, cfg.Site, cfg.Node, cfg.Listen.API, cfg.Listen.Raft, api, raftAddr)
	}
	tlsFiles := pki.Files{CA: cfg.TLS.CA, Cert: cfg.TLS.Cert, Key: cfg.TLS.Key, CRL: cfg.TLS.CRL}
	if id, _ := loadIdentity(t, tlsFiles); id.String() != "psc/broker/psc-1" {
		t.Errorf("identity of %s = %v, want psc/broker/psc-1", tlsFiles.Cert, id)
	}
	if b, err := os.ReadFile(cfg.TLS.CA); err != nil || !bytes.Equal(b, mustRead(t, caCert)) {
		t.Errorf("tls.ca %s = %v, want a copy of %s", cfg.TLS.CA, err, caCert)
	}
	tlsDir := filepath.Join(dir, "tls")
	admin := pki.Files{CA: cfg.TLS.CA, Cert: filepath.Join(tlsDir, "admin.crt"), Key: filepath.Join(tlsDir, "admin.key"), CRL: cfg.TLS.CRL}
	if id, _ := loadIdentity(t, admin); id.String() != "psc/admin/admin" {
		t.Errorf("identity of %s = %v, want psc/admin/admin", admin.Cert, id)
	}
	for _, k := range []string{cfg.TLS.Key, admin.Key} {
		checkMode(t, k, 0o600)
	}
	// The node accepts its certificate (it checks the identity against
	// its site and node name) and starts in TLS mode.
	n, err := node.Start(context.Background(), node.Options{Config: cfg})
	if err != nil {
		t.Fatalf("node.Start(%s) = %v", cfgPath, err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}

	t.Run("the bootstrap makes the administrator the first coordinator", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "rutgers")
		api := freeLoopback(t)
		mustRun(t, "init", "--site", "rutgers", "--dir", dir, "--ca-dir", caDir, "--api", api, "--raft", freeLoopback(t),
			"--admin", "rhea", "--admin-email", "rhea@rutgers.edu")
		cfg, err := node.LoadConfig(filepath.Join(dir, "rutgers-1.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		n, err := node.Start(context.Background(), node.Options{Config: cfg, Bootstrap: true})
		if err != nil {
			t.Fatalf("node.Start(--bootstrap) = %v", err)
		}
		defer n.Close()
		checkMode(t, filepath.Join(cfg.DataDir, "bootstrap-credential.json"), 0o600)
		admin := []string{"--addr", api, "--ca", cfg.TLS.CA, "--cert", filepath.Join(dir, "tls", "admin.crt"), "--key", filepath.Join(dir, "tls", "admin.key")}
		out := mustRun(t, append(admin, "whoami", "--json")...)
		if !strings.Contains(out, `"user": "rhea"`) || !strings.Contains(out, `"coordinator"`) {
			t.Errorf("whoami with the admin certificate = %s, want rhea, coordinator", out)
		}
		boot := []string{"--addr", api, "--ca", cfg.TLS.CA, "--session", filepath.Join(cfg.DataDir, "bootstrap-credential.json")}
		mustRun(t, append(boot, "site", "add", "psc", "--uid-range", "300000-309999", "--gid-range", "300000-309999")...)
	})

	t.Run("again refuses to overwrite", func(t *testing.T) {
		before := snapshot(t, dir)
		_, _, err := runCLI("init", "--site", "psc", "--dir", dir, "--ca-dir", caDir, "--api", api, "--raft", raftAddr)
		if err == nil || !strings.Contains(errorLine(err), "already exists") {
			t.Errorf("second init --dir %s = %v, want an error containing %q", dir, err, "already exists")
		}
		if after := snapshot(t, dir); !sameFiles(before, after) {
			t.Errorf("a refused init changed the files under %s", dir)
		}
	})

	t.Run("IPv6 addresses", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "v6")
		mustRun(t, "init", "--site", "v6", "--dir", dir, "--ca-dir", caDir, "--api", "[::1]:7100", "--raft", "[::1]:7101")
		cfg, err := node.LoadConfig(filepath.Join(dir, "v6-1.yaml"))
		if err != nil {
			t.Fatalf("node.LoadConfig = %v", err)
		}
		if cfg.Listen.API != "[::1]:7100" || cfg.Listen.Raft != "[::1]:7101" {
			t.Errorf("listen = %+v, want [::1]:7100 and [::1]:7101", cfg.Listen)
		}
		_, leaf := loadIdentity(t, pki.Files{CA: cfg.TLS.CA, Cert: cfg.TLS.Cert, Key: cfg.TLS.Key, CRL: cfg.TLS.CRL})
		if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv6loopback) }) || len(leaf.DNSNames) != 0 {
			t.Errorf("SANs of %s: IPs %v, DNS %q; want ::1 and no DNS names", cfg.TLS.Cert, leaf.IPAddresses, leaf.DNSNames)
		}
	})

	t.Run("without a CA", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "rutgers")
		out := mustRun(t, "init", "--site", "rutgers", "--dir", dir)
		if _, err := node.LoadConfig(filepath.Join(dir, "rutgers-1.yaml")); err != nil {
			t.Errorf("node.LoadConfig = %v", err)
		}
		if want := "labfed ca issue --dir CA_DIR --site rutgers --kind broker --name rutgers-1"; !strings.Contains(out, want) {
			t.Errorf("init without --ca-dir printed %q, want it to contain %q", out, want)
		}
	})
}

func mustRead(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func freeLoopback(t testing.TB) string {
	t.Helper()
	a, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCABadInput checks that bad ca and init command lines fail with one
// line saying what was wrong and change no file.
func TestCABadInput(t *testing.T) {
	isolateEnv(t)
	root := t.TempDir()
	dir := filepath.Join(root, "ca")
	mustRun(t, "ca", "init", "--dir", dir)
	mustRun(t, "ca", "issue", "--dir", dir, "--site", "rutgers", "--name", "rutgers-1")
	missing := filepath.Join(root, "no-such-ca")
	cert := filepath.Join(dir, "rutgers-broker-rutgers-1.crt")
	tests := []struct {
		name, args, want string
	}{
		{"unknown kind", "ca issue --dir D --site rutgers --kind root --name x", `identity kind "root" is not one of broker, agent, admin`},
		{"bad site name", "ca issue --dir D --site Rutgers --name r1", `site name "Rutgers" is not valid`},
		{"bad holder name", "ca issue --dir D --site rutgers --kind admin --name r_1", `admin name "r_1" is not valid`},
		{"host with a scheme", "ca issue --dir D --site rutgers --name r2 --host https://r2.example.org", "is neither an IP address nor a DNS name"},
		{"zero validity", "ca issue --dir D --site rutgers --name r3 --validity 0s", "validity 0s for rutgers/broker/r3 is not positive"},
		{"negative validity", "ca issue --dir D --site rutgers --name r3 --validity=-1m", "validity -1m0s for rutgers/broker/r3 is not positive"},
		{"issue without a CA", "ca issue --dir M --site rutgers --name r1", "load the federation CA from " + missing},
		{"revoke without --cert or --serial", "ca revoke --dir D", "say which certificate to revoke with --cert FILE or --serial N"},
		{"revoke with --cert and --serial", "ca revoke --dir D --cert C --serial 5", "give --cert or --serial, not both"},
		{"revoke a malformed serial", "ca revoke --dir D --serial 12ab", `--serial "12ab" is not a decimal number`},
		{"revoke serial zero", "ca revoke --dir D --serial 0", "is not a certificate serial"},
		{"revoke a missing file", "ca revoke --dir D --cert D/nope.crt", "nope.crt"},
		{"revoke a key, not a certificate", "ca revoke --dir D --cert D/ca.key", "no PEM CERTIFICATE block found"},
		{"revoke without a CA", "ca revoke --dir M --serial 5", "labfed ca init --dir " + missing},
		{"init a bad site name", "init --site Bad --dir R/bad", `site name "Bad" is not valid`},
		{"init without a CA", "init --site psc --dir R/psc --ca-dir M", "load the federation CA from " + missing},
		{"ca init without a federation name", "ca init --dir R/ca2 --federation ' '", "the federation name is empty"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			r := strings.NewReplacer("D/", dir+"/", "D ", dir+" ", "M ", missing+" ", "R/", root+"/", "C ", cert+" ")
			args := splitArgs(r.Replace(test.args + " "))
			before := snapshot(t, root)
			stdout, _, err := runCLI(args...)
			if err == nil {
				t.Fatalf("labfed %s = success (stdout %q), want an error containing %q", strings.Join(args, " "), stdout, test.want)
			}
			if line := errorLine(err); !strings.Contains(line, test.want) {
				t.Errorf("errorLine(labfed %s) = %q, want it to contain %q", strings.Join(args, " "), line, test.want)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("labfed %s = %q, want one line", strings.Join(args, " "), err)
			}
			if after := snapshot(t, root); !sameFiles(before, after) {
				t.Errorf("labfed %s failed but changed files under %s", strings.Join(args, " "), root)
			}
			if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("labfed %s: stat %s = %v, want it still missing", strings.Join(args, " "), missing, err)
			}
		})
	}
	// The CA still works after all of that.
	if got := crlSerials(t, filepath.Join(dir, "ca.crl"), filepath.Join(dir, "ca.crt")); len(got) != 0 {
		t.Errorf("CRL lists %v after only bad revocations, want none", got)
	}
}

// splitArgs splits s at spaces outside single quotes.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, have := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, have = !quoted, true
		case r == ' ' && !quoted:
			if have {
				out = append(out, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
