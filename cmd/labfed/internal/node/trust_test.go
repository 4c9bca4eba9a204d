package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/broker/rpc"
	"github.com/labfed/labfed/broker/trust"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// trustFixture is authzFixture (rutgers-1, the leader) with a second
// broker at psc and a second one at rutgers (a non-voter), and rita
// granted both to view and to operate the Krios.
type trustFixture struct {
	*tlsNode
	psc, rut2 *Node
	rut2Cfg   *Config
}

func newTrustFixture(t *testing.T) *trustFixture {
	t.Helper()
	tn := authzFixture(t)
	d := dir(tn.sessionConn(t, tn.session(t, "alice", false)))
	if _, err := d.AddGrant(callCtx(t), &pb.AddGrantRequest{Subject: "user:rita", Resource: "rutgers/krios-g4", Actions: []string{broker.ActionInstrumentOperate}}); err != nil {
		t.Fatal(err)
	}
	pscCfg := tlsTestConfig(t, "psc", "psc-1", tn.fed.issue(t, pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "psc-1"}))
	psc := startTLS(t, Options{Config: pscCfg, Join: []string{tn.n.Addr()}})
	rut2Cfg := tlsTestConfig(t, "rutgers", "rutgers-2", tn.fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-2"}))
	rut2 := startTLS(t, Options{Config: rut2Cfg, Join: []string{tn.n.Addr()}, NonVoter: true})
	for _, n := range []*Node{psc, rut2} {
		waitUntil(t, 20*time.Second, n.cfg.Node+" caught up", func() error {
			if a, b := stateHash(t, n), stateHash(t, tn.n); a != b {
				return fmt.Errorf("state %s, leader %s", a, b)
			}
			return nil
		})
	}
	return &trustFixture{tlsNode: tn, psc: psc, rut2: rut2, rut2Cfg: rut2Cfg}
}

// agent starts a verifier of site rutgers, with an agent certificate,
// following the broker at addr.
func (f *trustFixture) agent(t *testing.T, addr string, maxStale time.Duration) *trust.Store {
	t.Helper()
	cl, err := client.Dial(addr, client.Options{TLS: clientTLS(t, f.fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "agent-1"}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	s, err := trust.Open(trust.Options{Site: "rutgers", Source: cl.TrustSource(), CacheFile: t.TempDir() + "/trust.json", MaxStale: maxStale})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, 10*time.Second, "the agent's first trust state", func() error {
		if _, since := s.Contact(); since < 0 {
			return fmt.Errorf("no contact yet")
		}
		return nil
	})
	return s
}

func issue(t testing.TB, tokens pb.TokenServiceClient, scope string) (string, string) {
	t.Helper()
	r, err := tokens.Issue(callCtx(t), &pb.IssueTokenRequest{Scope: scope})
	if err != nil {
		t.Fatalf("issue %s: %v", scope, err)
	}
	return r.GetToken(), r.GetJti()
}

func refusal(err error) string {
	var re *capability.RefusedError
	switch {
	case err == nil:
		return "accepted"
	case errorsAs(err, &re):
		return re.Code
	}
	return err.Error()
}

// TestRevocationDelay measures how long a revocation lock takes from the
// coordinator's request at one broker (psc-1, a follower, which forwards
// it to the leader) to an agent of rutgers that follows another follower
// (rutgers-2), and checks it is within the 2 s the brief aims for. Then it
// checks a user lock, and that the agent fails closed for operate tokens
// (not view tokens) while its broker is down, and recovers.
func TestRevocationDelay(t *testing.T) {
	f := newTrustFixture(t)
	agent := f.agent(t, f.rut2.Addr(), 2*time.Second)
	rita := pb.NewTokenServiceClient(f.sessionConn(t, f.session(t, "rita", false)))
	coord := pb.NewTokenServiceClient(f.sessionConnAt(t, f.psc.Addr(), f.session(t, "alice", false)))

	rounds := 15
	if os.Getenv("LABFED_INTEG") != "" {
		rounds = 300 // the long run of make integ
	}
	var delays []time.Duration
	for range rounds {
		tok, jti := issue(t, rita, "instrument.operate:rutgers/krios-g4")
		waitUntil(t, 5*time.Second, "the agent accepts a fresh token", func() error {
			_, err := agent.Verify(tok, nil)
			return err
		})
		start := time.Now()
		if _, err := coord.Revoke(callCtx(t), &pb.RevokeTokensRequest{Jti: jti, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		for {
			_, err := agent.Verify(tok, nil)
			if refusal(err) == capability.CodeRevoked {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("token %s still %s 5 s after its revocation", jti, refusal(err))
			}
			time.Sleep(200 * time.Microsecond)
		}
		delays = append(delays, time.Since(start))
	}
	slices.Sort(delays)
	t.Logf("revocation delay, request at psc-1 to refusal at the agent of rutgers-2, %d rounds: min %v p50 %v max %v",
		rounds, delays[0].Round(time.Microsecond), delays[rounds/2].Round(time.Microsecond), delays[rounds-1].Round(time.Microsecond))
	if delays[rounds-1] > 2*time.Second {
		t.Errorf("slowest revocation took %v, more than the 2 s bound", delays[rounds-1])
	}

	// Fail closed: rutgers-2 goes away; after MaxStale (2 s) operate
	// tokens are refused and view tokens still accepted.
	op, _ := issue(t, rita, "instrument.operate:rutgers/krios-g4")
	vw, _ := issue(t, rita, "instrument.view:rutgers/krios-g4")
	f.rut2.Close()
	waitUntil(t, 10*time.Second, "the agent fails closed", func() error {
		if _, err := agent.Verify(op, nil); refusal(err) != trust.CodeBrokerLost {
			return fmt.Errorf("operate token: %s", refusal(err))
		}
		return nil
	})
	if _, err := agent.Verify(vw, nil); err != nil {
		t.Fatalf("view token refused while the broker is away: %v", err)
	}
	_, err := agent.Verify(op, nil)
	t.Logf("while the broker is away: %v", err)
	startTLS(t, Options{Config: f.rut2Cfg})
	waitUntil(t, 15*time.Second, "the agent accepts operate tokens again", func() error {
		_, err := agent.Verify(op, nil)
		return err
	})

	// A user lock refuses every token the user held.
	if _, err := coord.Revoke(callCtx(t), &pb.RevokeTokensRequest{User: "rita", Reason: "left the lab"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, "the user lock reaches the agent", func() error {
		for _, tok := range []string{op, vw} {
			if _, err := agent.Verify(tok, nil); refusal(err) != capability.CodeRevoked {
				return fmt.Errorf("token of a locked user: %s", refusal(err))
			}
		}
		return nil
	})
}

// TestRotationUnderLoad issues and verifies tokens without pause while the
// issuing broker rotates its key three times: every token verifies at the
// agent the moment it is issued, and every one still verifies afterwards,
// whichever key signed it.
func TestRotationUnderLoad(t *testing.T) {
	f := newTrustFixture(t)
	agent := f.agent(t, f.rut2.Addr(), 30*time.Second)
	rita := pb.NewTokenServiceClient(f.sessionConn(t, f.session(t, "rita", false)))
	admin := dir(f.sessionConn(t, f.session(t, "rhea", false)))

	stop := make(chan struct{})
	var mu sync.Mutex
	var tokens []string
	failures := 0
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := rita.Issue(context.Background(), &pb.IssueTokenRequest{Scope: "instrument.view:rutgers/krios-g4"})
				if err == nil {
					_, err = agent.Verify(r.GetToken(), nil)
				}
				mu.Lock()
				if err != nil {
					failures++
					t.Errorf("during rotation: %v", err)
				} else {
					tokens = append(tokens, r.GetToken())
				}
				mu.Unlock()
			}
		}()
	}
	kids := []string{f.n.keys.KID()}
	for range 3 {
		time.Sleep(150 * time.Millisecond)
		r, err := admin.RotateKey(callCtx(t), &pb.RotateKeyRequest{})
		if err != nil {
			t.Fatalf("rotate: %v", err)
		}
		if r.GetOldKid() != kids[len(kids)-1] || r.GetKey().GetStatus() != "active" {
			t.Fatalf("rotate = %v, want the old kid %s and an active new key", r, kids[len(kids)-1])
		}
		kids = append(kids, r.GetKey().GetKid())
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()

	perKID := map[string]int{}
	for _, tok := range tokens {
		c, err := agent.Verify(tok, nil)
		if err != nil {
			t.Errorf("after the rotations: %v", err)
			continue
		}
		_ = c
		h, _, _ := capabilityHeader(tok)
		perKID[h]++
	}
	t.Logf("%d tokens issued and verified during 3 rotations, %d failures; per key %v", len(tokens), failures, perKID)
	for _, kid := range kids {
		if perKID[kid] == 0 {
			t.Errorf("no token was signed with %s", kid)
		}
	}
	keys, err := f.n.Replica().Directory().SigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, k := range keys {
		status[k.KID] = k.Status
	}
	for i, kid := range kids {
		want := "retiring"
		if i == len(kids)-1 {
			want = "active"
		}
		if status[kid] != want {
			t.Errorf("key %s is %s, want %s", kid, status[kid], want)
		}
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// capabilityHeader returns the kid of a compact token.
func capabilityHeader(tok string) (kid string, _ map[string]any, err error) {
	seg, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return "", nil, err
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		return "", nil, err
	}
	kid, _ = h["kid"].(string)
	return kid, h, nil
}

// TestAgentFailsClosedWhenBrokerLosesLeader: the agent's broker stays up
// but loses the Raft leader (both voters stop). It must not keep the agent
// "in contact" over state that can no longer learn of revocations: its
// trust stream ends, and the agent fails closed for operate tokens.
func TestAgentFailsClosedWhenBrokerLosesLeader(t *testing.T) {
	f := newTrustFixture(t)
	agent := f.agent(t, f.rut2.Addr(), 2*time.Second)
	rita := pb.NewTokenServiceClient(f.sessionConn(t, f.session(t, "rita", false)))
	op, _ := issue(t, rita, "instrument.operate:rutgers/krios-g4")
	vw, _ := issue(t, rita, "instrument.view:rutgers/krios-g4")
	waitUntil(t, 5*time.Second, "the agent accepts the token", func() error { _, err := agent.Verify(op, nil); return err })
	start := time.Now()
	f.psc.Close()
	f.n.Close()
	waitUntil(t, 20*time.Second, "the agent fails closed", func() error {
		if _, err := agent.Verify(op, nil); refusal(err) != trust.CodeBrokerLost {
			return fmt.Errorf("operate token: %s", refusal(err))
		}
		return nil
	})
	if _, err := agent.Verify(vw, nil); err != nil {
		t.Errorf("view token refused: %v", err)
	}
	// The stream ends once the broker knows it has no leader (at most
	// rpc.MaxLeaderSilence after its last contact), then MaxStale runs.
	if d := time.Since(start); d > rpc.MaxLeaderSilence+2*time.Second+3*time.Second {
		t.Errorf("refused only %v after the voters stopped", d)
	}
	t.Logf("operate tokens refused %v after the voters stopped", time.Since(start).Round(100*time.Millisecond))
}
