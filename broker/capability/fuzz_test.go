package capability

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const corpusDir = "testdata/fuzz/FuzzVerify"

// fuzzWant is the scope FuzzVerify asks for. The catalog's validly signed
// but refused tokens (expired, wrong scope, revoked) stay refused under
// it, so the only input that may verify is the unmodified valid seed.
const fuzzWant = "instrument.operate:rutgers/krios-g4"

// FuzzVerify feeds Verify arbitrary tokens: it must never panic, and
// nothing but the valid seed may verify, since the fuzzer cannot sign.
func FuzzVerify(f *testing.F) {
	fx := newFixture()
	v := fx.verifier()
	want := mustScope(f, fuzzWant)
	valid := token(goodHeader(), goodClaims(), fx.k1)
	f.Add(valid)
	for _, h := range fx.catalog(f) {
		if h.code != "" && h.code != CodeSize {
			f.Add(h.tok)
		}
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok, &want)
		if err == nil {
			if tok != valid {
				t.Fatalf("Verify accepted a token other than the valid seed: %q → %+v", tok, c)
			}
			return
		}
		if c != nil {
			t.Fatalf("Verify returned claims with error %v", err)
		}
		if code(err) == "" || strings.HasPrefix(code(err), "untyped") {
			t.Fatalf("Verify error %v is not a *RefusedError", err)
		}
	})
}

// TestFuzzCorpus keeps the checked-in seed corpus in step with the
// catalog; LABFED_UPDATE_CORPUS=1 rewrites it.
func TestFuzzCorpus(t *testing.T) {
	fx := newFixture()
	seeds := map[string]string{"valid": token(goodHeader(), goodClaims(), fx.k1)}
	for _, h := range fx.catalog(t) {
		if h.code != "" && h.code != CodeSize {
			seeds[h.name] = h.tok
		}
	}
	file := func(name string) string {
		return filepath.Join(corpusDir, strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
				return r
			}
			return '-'
		}, name))
	}
	if os.Getenv("LABFED_UPDATE_CORPUS") != "" {
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, tok := range seeds {
			if err := os.WriteFile(file(name), []byte("go test fuzz v1\nstring("+strconv.Quote(tok)+")\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, tok := range seeds {
		b, err := os.ReadFile(file(name))
		if err != nil {
			t.Fatalf("seed %q: %v (run with LABFED_UPDATE_CORPUS=1)", name, err)
		}
		if got := string(b); got != "go test fuzz v1\nstring("+strconv.Quote(tok)+")\n" {
			t.Errorf("seed file %s is stale (run with LABFED_UPDATE_CORPUS=1)", file(name))
		}
	}
}
