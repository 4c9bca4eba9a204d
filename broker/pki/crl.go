package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// crlRecheck is how long a Bundle trusts its view of the CRL file before it
// looks at the file again.
const crlRecheck = time.Second

// ErrRevoked is wrapped by the errors of handshakes that fail because the
// peer's certificate is on the CRL.
var ErrRevoked = errors.New("certificate revoked")

// Revoke adds serials to the CRL at crlFile, creating the file if it is
// missing, re-signs the list with a CRL number one higher than before and
// replaces the file atomically (a temporary file renamed over it), so a
// reader sees the old list or the new one, never a torn write. Revoking a
// serial that is already on the list is harmless. Revoke is not safe for
// concurrent use on the same file.
func (ca *CA) Revoke(crlFile string, serials ...*big.Int) error {
	number := big.NewInt(1)
	var entries []x509.RevocationListEntry
	have := make(map[string]bool)
	b, err := os.ReadFile(crlFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read CRL: %w", err)
	default:
		prev, err := parseCRL(b, ca.Cert)
		if err != nil {
			return fmt.Errorf("CRL %s: %w", crlFile, err)
		}
		if prev.Number != nil {
			number.Add(prev.Number, big.NewInt(1))
		}
		for _, e := range prev.RevokedCertificateEntries {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: e.SerialNumber, RevocationTime: e.RevocationTime})
			have[e.SerialNumber.String()] = true
		}
	}
	now := time.Now()
	for _, s := range serials {
		if s == nil || s.Sign() <= 0 {
			return fmt.Errorf("serial number %v is not a certificate serial; read it with labfed ca serial CERT", s)
		}
		if have[s.String()] {
			continue
		}
		have[s.String()] = true
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	if !ca.Cert.NotAfter.After(now) {
		return fmt.Errorf("the federation CA expired at %s; it can no longer sign a CRL", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                ca.Cert.NotAfter, // not enforced; see the package documentation
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return fmt.Errorf("sign CRL: %w", err)
	}
	return writeAtomic(crlFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
}

// writeAtomic replaces file with b through a temporary file in the same
// directory.
func writeAtomic(file string, b []byte, perm fs.FileMode) error {
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", file, err)
	}
	// Make the rename itself durable; not every system can sync a
	// directory, and the new list is in place either way.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// parseCRL parses a PEM (or DER) CRL and checks that ca signed it.
func parseCRL(b []byte, ca *x509.Certificate) (*x509.RevocationList, error) {
	der := b
	if p, _ := pem.Decode(b); p != nil {
		if p.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block is %q, not X509 CRL", p.Type)
		}
		der = p.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	if err := rl.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("the CRL is not signed by the federation CA %q: %w", ca.Subject.CommonName, err)
	}
	return rl, nil
}

// crlWatcher holds the revoked serials of a CRL file, re-reading the file
// when it changes. A nil *crlWatcher revokes nothing.
type crlWatcher struct {
	file string
	ca   *x509.Certificate

	mu      sync.Mutex
	checked time.Time   // when the file was last looked at
	info    fs.FileInfo // of the file the list came from; nil before one is read
	number  *big.Int
	revoked map[string]bool // by serial.String()
	err     error           // of the last refresh
}

// newCRLWatcher reads file, which may not exist yet (no revocations) but,
// if it does, must be a CRL signed by ca.
func newCRLWatcher(file string, ca *x509.Certificate) (*crlWatcher, error) {
	w := &crlWatcher{file: file, ca: ca, checked: time.Now()}
	if err := w.refresh(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("CRL %s: %w", file, err)
	}
	return w, nil
}

// revoked reports whether serial is on the list.
func (w *crlWatcher) isRevoked(serial *big.Int) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if now := time.Now(); now.Sub(w.checked) >= crlRecheck || now.Before(w.checked) {
		w.checked = now
		w.err = w.refresh()
	}
	return w.revoked[serial.String()]
}

// refresh re-reads the file if it changed. On any error the list in use
// stays: a missing, torn or forged file must not un-revoke anything.
func (w *crlWatcher) refresh() error {
	fi, err := os.Stat(w.file)
	if err != nil {
		return err
	}
	if w.info != nil && os.SameFile(fi, w.info) && fi.ModTime().Equal(w.info.ModTime()) && fi.Size() == w.info.Size() {
		return nil
	}
	b, err := os.ReadFile(w.file)
	if err != nil {
		return err
	}
	rl, err := parseCRL(b, w.ca)
	if err != nil {
		return err
	}
	if w.number != nil && (rl.Number == nil || rl.Number.Cmp(w.number) < 0) {
		return fmt.Errorf("CRL number %v is lower than %v, the one in use; ignoring the older list", rl.Number, w.number)
	}
	revoked := make(map[string]bool, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		revoked[e.SerialNumber.String()] = true
	}
	w.info, w.number, w.revoked = fi, rl.Number, revoked
	return nil
}
