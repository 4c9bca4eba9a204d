package capability

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestSignJOSE checks Sign's tokens against go-jose's own parser, and that
// go-jose writes nothing into the protected header beyond alg, kid and
// typ: the Verifier refuses any other parameter.
func TestSignJOSE(t *testing.T) {
	f := newFixture()
	pub := f.k1.Public().(ed25519.PublicKey)
	in := Claims{
		Subject: "alice", Audience: "rutgers", ID: "tok-9",
		IssuedAt: testNow.Add(-time.Minute), NotBefore: testNow.Add(-time.Minute), Expiry: testNow.Add(14 * time.Minute),
		Scope:  []Scope{mustScope(t, "instrument.operate:rutgers/krios-g4"), mustScope(t, "storage.read:rutgers/raw:/session-123")},
		POSIX:  &POSIX{User: "alice", UID: 200001, GID: 200001, Groups: []uint32{200001}},
		Grants: []string{"g-1", "g-2"},
	}
	// The claims encoding is part of the wire format: pin it.
	const payload = `{"iss":"broker-a","sub":"alice","aud":"rutgers","exp":1772367240,"nbf":1772366340,"iat":1772366340,` +
		`"jti":"tok-9","ver":"1","scope":"instrument.operate:rutgers/krios-g4 storage.read:rutgers/raw/session-123",` +
		`"posix":{"user":"alice","uid":200001,"gid":200001,"groups":[200001]},"grant":["g-1","g-2"]}`
	for _, kid := range []string{"k1", "broker-a/2026-03", `k"<&>`} {
		t.Run(kid, func(t *testing.T) {
			tok, err := NewSigner(kid, "broker-a", f.k1).Sign(in)
			if err != nil {
				t.Fatal(err)
			}
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.EdDSA})
			if err != nil {
				t.Fatalf("jose.ParseSignedCompact(Sign(claims)) = %v", err)
			}
			got, err := jws.Verify(pub)
			if err != nil {
				t.Fatalf("jose Verify(Sign(claims)) = %v", err)
			}
			if string(got) != payload {
				t.Errorf("jose Verify(Sign(claims)) payload = %s, want %s", got, payload)
			}
			if len(jws.Signatures) != 1 {
				t.Fatalf("jose.ParseSignedCompact(Sign(claims)) has %d signatures, want 1", len(jws.Signatures))
			}
			if p := jws.Signatures[0].Protected; p.Algorithm != Alg || p.KeyID != kid || p.ExtraHeaders[jose.HeaderType] != Typ || len(p.ExtraHeaders) != 1 || p.JSONWebKey != nil || p.Nonce != "" {
				t.Errorf("jose protected header = %+v, want alg %s, kid %q, typ %s and nothing else", p, Alg, kid, Typ)
			}

			// Byte for byte: the header go-jose wrote, and the whole token
			// against one assembled by hand from the same parts.
			k, _ := json.Marshal(kid)
			header := `{"alg":"EdDSA","kid":` + string(k) + `,"typ":"labfed-cap+jwt"}`
			parts := strings.Split(tok, ".")
			if got := string(mustDecode(t, parts[0])); got != header {
				t.Errorf("protected header = %s, want %s", got, header)
			}
			want := seg(header) + "." + seg(payload)
			want += "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(f.k1, []byte(want)))
			if tok != want {
				t.Errorf("Sign(claims) = %s, want %s", tok, want)
			}
		})
	}
}

// TestSignConcurrent runs one Signer from many goroutines, for -race.
func TestSignConcurrent(t *testing.T) {
	f := newFixture()
	s := NewSigner("k1", "broker-a", f.k1)
	v := f.verifier()
	c := benchClaims(t)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for range 20 {
				var tok string
				if tok, err = s.Sign(c); err != nil {
					break
				}
				if _, err = v.Verify(tok, nil); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
