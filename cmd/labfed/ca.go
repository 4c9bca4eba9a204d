package main

import (
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/cmd/labfed/internal/node"
)

// CA file names inside a CA directory.
func caFiles(dir string) (cert, key, crl string) {
	return filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), filepath.Join(dir, "ca.crl")
}

func loadCA(dir string) (*pki.CA, error) {
	cert, key, _ := caFiles(dir)
	ca, err := pki.LoadCA(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load the federation CA from %s: %w; create one with labfed ca init --dir %s", dir, err, dir)
	}
	return ca, nil
}

// writeNew writes data to path, refusing to replace an existing file.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; move it away first, labfed never overwrites keys or certificates", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// issue writes a certificate and key for id to prefix.crt and prefix.key.
func issue(ca *pki.CA, id pki.Identity, hosts []string, validity time.Duration, prefix string) error {
	if err := id.Validate(); err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.Issue(id, hosts, validity)
	if err != nil {
		return err
	}
	if err := writeNew(prefix+".key", keyPEM, 0o600); err != nil {
		return err
	}
	return writeNew(prefix+".crt", certPEM, 0o644)
}

func caCommand() *cli.Command {
	dirFlag := func() cli.Flag {
		return &cli.StringFlag{Name: "dir", Usage: "the CA's `DIR` (ca.crt, ca.key, ca.crl)", Required: true}
	}
	return &cli.Command{
		Name:  "ca",
		Usage: "run the federation's certificate authority: create it, issue site certificates, revoke them",
		Description: "Every broker, agent and administrator of the federation holds a certificate from\n" +
			"this CA naming its site, kind and name (URI SAN spiffe://labfed/site/SITE/KIND/NAME).\n" +
			"Brokers accept a peer only with such a certificate, so the peer's site comes\n" +
			"from the certificate, never from what it says. Keep ca.key offline.",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create a federation CA",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "federation", Value: "labfed", Usage: "the federation's `NAME`, in the CA's subject"},
					&cli.DurationFlag{Name: "validity", Value: 10 * 365 * 24 * time.Hour, Usage: "how long the CA is valid"},
				},
				Action: func(c *cli.Context) error {
					dir := c.String("dir")
					if err := os.MkdirAll(dir, 0o700); err != nil {
						return err
					}
					ca, err := pki.NewCA(c.String("federation"), c.Duration("validity"))
					if err != nil {
						return err
					}
					cert, key, crl := caFiles(dir)
					if err := ca.Save(cert, key); err != nil {
						return err
					}
					// An empty revocation list from the start, so site
					// configs can name it before anything is revoked.
					if err := ca.Revoke(crl); err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.App.Writer, "created the federation CA: %s (give it to every site) and %s (keep it offline)\n", cert, key)
					return err
				},
			},
			{
				Name:  "issue",
				Usage: "issue a certificate to a broker, agent or administrator of a site",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "site", Required: true, Usage: "the holder's `SITE`"},
					&cli.StringFlag{Name: "kind", Value: pki.KindBroker, Usage: "broker, agent or admin"},
					&cli.StringFlag{Name: "name", Required: true, Usage: "the holder's `NAME` (a broker's node name, an admin's user name)"},
					&cli.StringSliceFlag{Name: "host", Usage: "a DNS name or IP address the holder serves on (repeatable)"},
					&cli.DurationFlag{Name: "validity", Value: 365 * 24 * time.Hour, Usage: "how long the certificate is valid"},
					&cli.StringFlag{Name: "out", Usage: "write `PREFIX`.crt and PREFIX.key (default DIR/SITE-KIND-NAME)"},
				},
				Action: func(c *cli.Context) error {
					ca, err := loadCA(c.String("dir"))
					if err != nil {
						return err
					}
					id := pki.Identity{Site: c.String("site"), Kind: c.String("kind"), Name: c.String("name")}
					out := c.String("out")
					if out == "" {
						out = filepath.Join(c.String("dir"), id.Site+"-"+id.Kind+"-"+id.Name)
					}
					if err := issue(ca, id, c.StringSlice("host"), c.Duration("validity"), out); err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.App.Writer, "issued %s: %s.crt, %s.key\n", id, out, out)
					return err
				},
			},
			{
				Name:  "revoke",
				Usage: "revoke a certificate; brokers refuse it as soon as they see the new CRL",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "cert", Usage: "the certificate `FILE` to revoke"},
					&cli.StringFlag{Name: "serial", Usage: "or its serial `NUMBER` (decimal)"},
				},
				Action: func(c *cli.Context) error {
					ca, err := loadCA(c.String("dir"))
					if err != nil {
						return err
					}
					var serial *big.Int
					switch {
					case c.String("cert") != "" && c.String("serial") != "":
						return errors.New("give --cert or --serial, not both")
					case c.String("cert") != "":
						b, err := os.ReadFile(c.String("cert"))
						if err != nil {
							return err
						}
						if serial, err = pki.CertSerial(b); err != nil {
							return fmt.Errorf("%s: %w", c.String("cert"), err)
						}
					case c.String("serial") != "":
						var ok bool
						if serial, ok = new(big.Int).SetString(c.String("serial"), 10); !ok {
							return fmt.Errorf("--serial %q is not a decimal number", c.String("serial"))
						}
					default:
						return errors.New("say which certificate to revoke with --cert FILE or --serial N")
					}
					_, _, crl := caFiles(c.String("dir"))
					if err := ca.Revoke(crl, serial); err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.App.Writer, "revoked serial %s; copy %s to every site (the tls.crl of their configs)\n", serial, crl)
					return err
				},
			},
		},
	}
}

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "write a parameterized site config and the certificates a new site's broker needs",
		Description: "Writes DIR/NODE.yaml and, when --ca-dir names the federation CA, DIR/tls/ with the\n" +
			"CA certificate, the broker's certificate and key, and an administrator's certificate.\n" +
			"Without --ca-dir it prints the labfed ca issue command the federation's CA holder runs.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "site", Required: true, Usage: "the site's `NAME`"},
			&cli.StringFlag{Name: "dir", Required: true, Usage: "where to write the config and keys"},
			&cli.StringFlag{Name: "node", Usage: "the broker's node `NAME` (default SITE-1)"},
			&cli.StringFlag{Name: "api", Value: "127.0.0.1:7100", Usage: "gRPC listen `ADDR`"},
			&cli.StringFlag{Name: "raft", Value: "127.0.0.1:7101", Usage: "Raft listen `ADDR`"},
			&cli.StringFlag{Name: "uid-range", Value: "200000-299999", Usage: "uids for the site's accounts, `LO-HI`"},
			&cli.StringFlag{Name: "gid-range", Value: "200000-299999", Usage: "gids for the site's groups, `LO-HI`"},
			&cli.StringFlag{Name: "ca-dir", Usage: "the federation CA's `DIR`, to issue the certificates now"},
			&cli.StringFlag{Name: "admin", Value: "admin", Usage: "`NAME` on the administrator's certificate; with --bootstrap this user becomes the first coordinator"},
			&cli.StringFlag{Name: "admin-email", Usage: "the administrator's `EMAIL`, for the bootstrap section of the config"},
		},
		Action: func(c *cli.Context) error {
			site := c.String("site")
			if err := broker.ValidateName("site", site); err != nil {
				return err
			}
			nodeName := c.String("node")
			if nodeName == "" {
				nodeName = site + "-1"
			}
			dir, err := filepath.Abs(c.String("dir"))
			if err != nil {
				return err
			}
			tlsDir := filepath.Join(dir, "tls")
			if err := os.MkdirAll(tlsDir, 0o700); err != nil {
				return err
			}
			cfgText, err := siteConfig(site, nodeName, dir, c.String("api"), c.String("raft"), c.String("uid-range"), c.String("gid-range"), c.String("admin"), c.String("admin-email"))
			if err != nil {
				return err
			}
			cfgPath := filepath.Join(dir, nodeName+".yaml")
			if caDir := c.String("ca-dir"); caDir != "" {
				ca, err := loadCA(caDir)
				if err != nil {
					return err
				}
				caCert, _, caCRL := caFiles(caDir)
				b, err := os.ReadFile(caCert)
				if err != nil {
					return err
				}
				if err := writeNew(filepath.Join(tlsDir, "ca.crt"), b, 0o644); err != nil {
					return err
				}
				if crl, err := os.ReadFile(caCRL); err == nil {
					if err := writeNew(filepath.Join(tlsDir, "ca.crl"), crl, 0o644); err != nil {
						return err
					}
				}
				hosts := []string{}
				for _, a := range []string{c.String("api"), c.String("raft")} {
					// SplitHostPort, not a split at ":", so that an IPv6
					// address ([::1]:7100) yields its host.
					if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
						hosts = append(hosts, h)
					}
				}
				if err := issue(ca, pki.Identity{Site: site, Kind: pki.KindBroker, Name: nodeName}, hosts, 365*24*time.Hour, filepath.Join(tlsDir, "broker")); err != nil {
					return err
				}
				if err := issue(ca, pki.Identity{Site: site, Kind: pki.KindAdmin, Name: c.String("admin")}, nil, 365*24*time.Hour, filepath.Join(tlsDir, "admin")); err != nil {
					return err
				}
				// The gossip key is the federation's shared secret, kept
				// with its CA: the first init makes it, later ones copy it.
				shared := filepath.Join(caDir, "gossip.keys")
				if _, err := os.Stat(shared); os.IsNotExist(err) {
					if err := node.NewGossipKeyring(shared); err != nil {
						return err
					}
				}
				keys, err := os.ReadFile(shared)
				if err != nil {
					return err
				}
				if err := writeNew(filepath.Join(tlsDir, "gossip.keys"), keys, 0o600); err != nil {
					return err
				}
			}
			if err := writeNew(cfgPath, []byte(cfgText), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s\n", cfgPath)
			if c.String("ca-dir") == "" {
				fmt.Fprintf(c.App.Writer, "next: the federation's CA holder runs\n  labfed ca issue --dir CA_DIR --site %s --kind broker --name %s --out %s\nand sends you ca.crt for %s and the federation's gossip.keys for %s\n",
					site, nodeName, filepath.Join(tlsDir, "broker"), filepath.Join(tlsDir, "ca.crt"), filepath.Join(tlsDir, "gossip.keys"))
			}
			_, err = fmt.Fprintf(c.App.Writer, "start it with: labfed serve --config %s --join EXISTING_BROKER_API (or --bootstrap for the first site)\n", cfgPath)
			return err
		},
	}
}

// siteConfig renders a broker config and checks that it parses.
func siteConfig(site, nodeName, dir, api, raftAddr, uids, gids, admin, adminEmail string) (string, error) {
	tlsDir := filepath.Join(dir, "tls")
	text := fmt.Sprintf(`# labfed broker %s of site %s, written by labfed init.
site: %s
node: %s
data_dir: %s
listen:
  api: %q    # gRPC for the CLI, agents and other brokers (TLS 1.3)
  raft: %q   # Raft between brokers (mutual TLS)
uid_range: %s  # uids labfed allocates for accounts here
gid_range: %s  # gids for user-private and project groups
tls:
  ca: %s
  cert: %s
  key: %s
  crl: %s  # optional; copy the CA's ca.crl here after revocations
gossip:
  keyring: %s  # the federation's gossip key (the CA holder's gossip.keys)
# People log in with labfed login through an OpenID Connect issuer:
# oidc:
#   issuers:
#     - url: https://cilogon.org
#       client_ids: [cilogon:/client_id/EXAMPLE]  # labfed's registration at the issuer
#   session_ttl: 8h  # how long a login lasts (at most 24h)
`, nodeName, site, site, nodeName, filepath.Join(dir, "data"), api, raftAddr, uids, gids,
		filepath.Join(tlsDir, "ca.crt"), filepath.Join(tlsDir, "broker.crt"), filepath.Join(tlsDir, "broker.key"), filepath.Join(tlsDir, "ca.crl"), filepath.Join(tlsDir, "gossip.keys"))
	head := "# Read only by the federation's first node (labfed serve --bootstrap): it\n" +
		"# registers this person as the first coordinator (the administrator\n" +
		"# certificate in tls/admin.crt names them) and writes their session\n" +
		"# credential, mode 0600, to DATA_DIR/bootstrap-credential.json.\n"
	boot := fmt.Sprintf("bootstrap:\n  coordinator:\n    name: %s\n    email: %s\n", admin, adminEmail)
	if adminEmail == "" {
		head += "# Uncomment and give an email address (or rerun labfed init with --admin-email):\n"
		boot = "# " + strings.ReplaceAll(strings.TrimSuffix(boot, "\n"), "\n", "\n# ") + "EMAIL\n"
	}
	boot = head + boot
	text += boot
	if _, err := node.ParseConfig("generated config", []byte(text)); err != nil {
		return "", err
	}
	return text, nil
}
