package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Credential is a session credential as the CLI keeps it on disk, written
// by labfed login (and, for the first coordinator, by the bootstrap).
type Credential struct {
	// Broker is the API address the credential was obtained from.
	Broker  string    `json:"broker"`
	User    string    `json:"user"`
	Token   string    `json:"token"`
	Session string    `json:"session"`
	Expires time.Time `json:"expires"`
}

// DefaultCredentialPath is where labfed login keeps the session credential
// when LABFED_SESSION does not say otherwise.
func DefaultCredentialPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "labfed", "session.json")
}

// SaveCredential writes c to path with mode 0600, atomically, creating the
// directory (mode 0700) when needed.
func SaveCredential(path string, c *Credential) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save credential: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".session-*")
	if err != nil {
		return fmt.Errorf("save credential: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save credential: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save credential: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save credential: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save credential: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// ErrNoCredential is returned by LoadCredential when there is no file.
var ErrNoCredential = errors.New("no session credential; run labfed login")

// LoadCredential reads a credential file. It refuses one that others can
// read, as ssh does with private keys.
func LoadCredential(path string) (*Credential, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoCredential
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("session credential %s is readable by others (mode %04o); chmod 600 it or run labfed login again", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Credential
	if err := json.Unmarshal(b, &c); err != nil || c.Token == "" {
		return nil, fmt.Errorf("session credential %s is damaged; run labfed login again", path)
	}
	return &c, nil
}
