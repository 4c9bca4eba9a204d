package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/rpc"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// seed registers the federation's first coordinator on a freshly
// bootstrapped node and writes their session credential (mode 0600), the
// way Consul's ACL bootstrap hands out the first management token. Without
// it nobody could be allowed to change the directory.
func (n *Node) seed(ctx context.Context) error {
	co := n.cfg.Bootstrap.Coordinator
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Wait until this node leads and has registered its site.
	for {
		var siteKnown bool
		if n.replica.IsLeader() {
			_, err := n.replica.Directory().Site(n.cfg.Site)
			siteKnown = err == nil
		}
		if siteKnown {
			break
		}
		if n.cfg.uidRange == nil && n.replica.IsLeader() {
			return errors.New("--bootstrap needs uid_range and gid_range in the config to register the first site")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bootstrap: this node did not become leader and register site %s in time: %w", n.cfg.Site, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	now := time.Now().UTC()
	actor := "bootstrap:" + n.cfg.Node
	if _, err := n.replica.Apply(ctx, &directory.Command{Time: now, Actor: actor, AddUser: &directory.AddUser{
		Name: co.Name, Email: co.Email, Home: n.cfg.Site, Identities: n.cfg.coordIDs, Roles: []string{directory.RoleCoordinator},
	}}); err != nil {
		return fmt.Errorf("bootstrap: register the first coordinator %s: %w", co.Name, err)
	}
	token, err := rpc.NewSessionToken()
	if err != nil {
		return err
	}
	ttl := n.cfg.Bootstrap.CredentialTTL
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	v, err := n.replica.Apply(ctx, &directory.Command{Time: now, Actor: actor, CreateSession: &directory.CreateSession{
		Session: directory.Session{ID: rpc.SessionDigest(token), User: co.Name, Site: n.cfg.Site, Expires: now.Add(ttl)},
	}})
	if err != nil {
		return fmt.Errorf("bootstrap: create the first coordinator's session: %w", err)
	}
	sess := v.(*directory.Session)
	cred := &client.Credential{Broker: n.cfg.Advertise.API, User: co.Name, Token: token, Session: sess.Short(), Expires: sess.Expires}
	if err := client.SaveCredential(n.cfg.Bootstrap.Credential, cred); err != nil {
		return err
	}
	n.log.Info("registered the first coordinator; their session credential is in the file below (mode 0600). Use it with LABFED_SESSION=FILE, register your own OIDC identity, then delete it",
		"user", co.Name, "file", n.cfg.Bootstrap.Credential, "expires", sess.Expires.Format(time.RFC3339))
	return nil
}

// loginIssuers lists the configured issuers for GetLoginConfig: one entry
// per client id.
func loginIssuers(c *Config) []*pb.LoginIssuer {
	var out []*pb.LoginIssuer
	for _, is := range c.OIDC.Issuers {
		for _, id := range is.ClientIDs {
			out = append(out, &pb.LoginIssuer{Url: is.URL, ClientId: id})
		}
	}
	return out
}
