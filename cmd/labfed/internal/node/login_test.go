package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/cmd/labfed/internal/oidcissuer"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

const testClientID = "labfed-cli"

func newIssuer(t *testing.T) *oidcissuer.Issuer {
	t.Helper()
	is, err := oidcissuer.New(oidcissuer.Config{
		Clients: []oidcissuer.Client{{ID: testClientID, RedirectLoopbackOnly: true}, {ID: "another-app", RedirectLoopbackOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { is.Close() })
	return is
}

// TestLoginRefusesBadIDTokens runs Login on a TLS node that trusts a real
// OIDC issuer on loopback, with good and hostile ID tokens.
func TestLoginRefusesBadIDTokens(t *testing.T) {
	is, stranger := newIssuer(t), newIssuer(t)
	fed := newTLSFed(t, "cryo-em")
	cfg := tlsTestConfig(t, "rutgers", "rutgers-1", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}))
	caFile := filepath.Join(t.TempDir(), "oidc-ca.pem")
	if err := os.WriteFile(caFile, is.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.OIDC.Issuers = []OIDCIssuer{{URL: is.URL(), ClientIDs: []string{testClientID}, CAFile: caFile}}
	tn := &tlsNode{fed: fed, cfg: cfg, n: startTLS(t, Options{Config: cfg, Bootstrap: true})}
	waitLeaderWithSite(t, tn.n, "rutgers")

	coord := dir(tn.sessionConn(t, tn.session(t, "alice", false)))
	ctx := callCtx(t)
	for _, u := range []struct{ name, subject string }{{"rita", "sub-rita"}, {"sid", "sub-sid"}} {
		if _, err := coord.AddUser(ctx, &pb.AddUserRequest{Name: u.name, Email: u.name + "@rutgers.edu", Home: "rutgers",
			Identities: []*pb.Identity{{Issuer: is.URL(), Subject: u.subject}}}); err != nil {
			t.Fatal(err)
		}
	}
	suspended := "suspended"
	if _, err := coord.UpdateUser(ctx, &pb.UpdateUserRequest{Name: "sid", Status: &suspended}); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"iss": is.URL(), "sub": "sub-rita", "aud": testClientID, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "email": "rita@rutgers.edu"}
		if edit != nil {
			edit(c)
		}
		return c
	}
	good := is.SignIDToken(claims(nil))
	unsigned := func() string {
		parts := strings.Split(is.SignIDToken(claims(nil)), ".")
		return "eyJhbGciOiJub25lIn0." + parts[1] + "."
	}()
	login := lgn(tn.sessionConn(t, ""))
	for _, tc := range []struct {
		name  string
		token string
		code  codes.Code
		msg   string
	}{
		{"good", good, codes.OK, ""},
		{"the same ID token again", good, codes.Unauthenticated, "already used to log in"},
		{"wrong issuer", stranger.SignIDToken(claims(func(c map[string]any) { c["iss"] = stranger.URL() })), codes.Unauthenticated, "not configured"},
		{"wrong audience", is.SignIDToken(claims(func(c map[string]any) { c["aud"] = "another-app" })), codes.Unauthenticated, "issued to client another-app"},
		{"expired", is.SignIDToken(claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), codes.Unauthenticated, "expired"},
		{"unsigned", unsigned, codes.Unauthenticated, "ID token refused"},
		{"signed by an unknown key", stranger.SignIDToken(claims(nil)), codes.Unauthenticated, "ID token refused"},
		{"tampered", good[:len(good)-4] + "AAAA", codes.Unauthenticated, "ID token refused"},
		{"unregistered subject", is.SignIDToken(claims(func(c map[string]any) { c["sub"] = "sub-nobody" })), codes.PermissionDenied, "not registered in the federation; ask your site administrator"},
		{"suspended user", is.SignIDToken(claims(func(c map[string]any) { c["sub"] = "sub-sid" })), codes.PermissionDenied, "user sid is suspended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := login.Login(callCtx(t), &pb.LoginRequest{IdToken: tc.token})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("Login = %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if tc.code != codes.OK {
				return
			}
			if resp.GetUser() != "rita" || !strings.HasPrefix(resp.GetToken(), "lfs_") {
				t.Fatalf("Login = %v, want a session for rita", resp)
			}
			if ttl := time.Until(resp.GetExpires().AsTime()); ttl < 7*time.Hour || ttl > 8*time.Hour {
				t.Errorf("session lasts %v, want the default 8h", ttl)
			}
			who, err := lgn(tn.sessionConn(t, resp.GetToken())).WhoAmI(context.Background(), &pb.WhoAmIRequest{})
			if err != nil || who.GetUser() != "rita" || who.GetMethod() != "session" {
				t.Errorf("WhoAmI with the new session = %v, %v", who, err)
			}
		})
	}
	// One ID token has many spellings that verify (spare bits in the last
	// base64url character of each segment); none of them logs in again.
	t.Run("respelled ID token", func(t *testing.T) {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		parts := strings.Split(good, ".")
		for i, seg := range parts {
			if len(seg)*6%8 == 0 {
				continue // no spare bits in this segment
			}
			k := strings.IndexByte(alphabet, seg[len(seg)-1])
			respelled := append([]string(nil), parts...)
			respelled[i] = seg[:len(seg)-1] + string(alphabet[k^1])
			_, err := login.Login(callCtx(t), &pb.LoginRequest{IdToken: strings.Join(respelled, ".")})
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("Login with segment %d respelled = %v, want Unauthenticated", i, err)
			}
		}
	})
	// Nothing the refusals did left a session behind: rita has exactly the
	// one from the good token.
	ss, err := lgn(tn.sessionConn(t, tn.session(t, "alice", false))).ListSessions(ctx, &pb.ListSessionsRequest{User: "rita"})
	if err != nil || len(ss.GetSessions()) != 1 || !strings.Contains(ss.GetSessions()[0].GetVia(), "sub-rita") {
		t.Errorf("rita's sessions = %v, %v; want the one from the good token", ss, err)
	}
}
