package capability

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// The benchmarks report each figure as a ratio to raw Ed25519 measured in
// the same run (x_raw_sign, x_raw_verify: raw ns / our ns, 1.0 = no
// overhead at all), since the machines are shared and noisy.

func benchClaims(tb testing.TB) Claims {
	return Claims{
		Subject: "alice", Audience: "rutgers", ID: "tok-1",
		IssuedAt: testNow.Add(-time.Minute), NotBefore: testNow.Add(-time.Minute), Expiry: testNow.Add(14 * time.Minute),
		Scope:  []Scope{mustScope(tb, "instrument.operate:rutgers/krios-g4"), mustScope(tb, "storage.read:rutgers/raw/session-123")},
		POSIX:  &POSIX{User: "alice", UID: 200001, GID: 200001, Groups: []uint32{200001}},
		Grants: []string{"g-1"},
	}
}

// rawNs times n raw operations and returns ns per operation.
func rawNs(n int, op func()) float64 {
	start := time.Now()
	for range n {
		op()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func BenchmarkSign(b *testing.B) {
	fx := newFixture()
	s := NewSigner("k1", "broker-a", fx.k1)
	c := benchClaims(b)
	tok, err := s.Sign(c)
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(tok[:len(tok)-87]) // the signing input of the same token
	raw := rawNs(200, func() { ed25519.Sign(fx.k1, msg) })
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		n++
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
	per := float64(time.Since(start).Nanoseconds()) / float64(n)
	b.StopTimer()
	raw = (raw + rawNs(200, func() { ed25519.Sign(fx.k1, msg) })) / 2
	b.ReportMetric(raw, "raw_sign_ns")
	b.ReportMetric(raw/per, "x_raw_sign")
}

func BenchmarkVerify(b *testing.B) {
	fx := newFixture()
	s := NewSigner("k1", "broker-a", fx.k1)
	v := NewVerifier("rutgers", fx.bundle, WithClock(func() time.Time { return testNow }))
	tok, err := s.Sign(benchClaims(b))
	if err != nil {
		b.Fatal(err)
	}
	want := mustScope(b, "storage.read:rutgers/raw/session-123/frames")
	pub := fx.k1.Public().(ed25519.PublicKey)
	msg := []byte(tok[:len(tok)-87])
	sig := mustDecode(b, tok[len(tok)-86:])
	if !ed25519.Verify(pub, msg, sig) {
		b.Fatal("raw verify failed")
	}
	raw := rawNs(200, func() { ed25519.Verify(pub, msg, sig) })
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		n++
		if _, err := v.Verify(tok, &want); err != nil {
			b.Fatal(err)
		}
	}
	per := float64(time.Since(start).Nanoseconds()) / float64(n)
	b.StopTimer()
	raw = (raw + rawNs(200, func() { ed25519.Verify(pub, msg, sig) })) / 2
	b.ReportMetric(raw, "raw_verify_ns")
	b.ReportMetric(raw/per, "x_raw_verify")
}
