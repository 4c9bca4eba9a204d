package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func testOffer() Offer {
	o := sampleOffer("psc", "psc-1")
	o.Node, o.Site, o.Version = "psc-1", "psc", 1795540000000000000
	return o
}

// mustEncode unwraps an encoder's result; the encoders fail only on
// oversized input, which these tests do not build.
func mustEncode(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	o := testOffer()
	key := []byte("0123456789abcdef")
	tests := []struct {
		name string
		msg  []byte
		want message
	}{
		{"offer", mustEncode(encodeOffer(o)), message{typ: msgOffer, offer: o}},
		{"state", mustEncode(encodeState([]Offer{o, o})), message{typ: msgState, state: []Offer{o, o}}},
		{"key op", mustEncode(encodeKeyOp(keyOp{ID: "a1", Op: opUse, Key: key, From: "psc-1"})),
			message{typ: msgKeyOp, keyOp: keyOp{ID: "a1", Op: opUse, Key: key, From: "psc-1"}}},
		{"key ack", mustEncode(encodeKeyAck(keyAck{ID: "a1", From: "psc-2", Error: "no"})),
			message{typ: msgKeyAck, keyAck: keyAck{ID: "a1", From: "psc-2", Error: "no"}}},
		{"leave", mustEncode(encodeLeave(leaveIntent{Node: "psc-1"})), message{typ: msgLeave, leave: leaveIntent{Node: "psc-1"}}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			got, err := decode(test.msg)
			if err != nil {
				t.Fatalf("decode(%s) = %v", test.msg, err)
			}
			if !reflect.DeepEqual(got, test.want) {
				t.Errorf("decode(%s) = %+v, want %+v", test.msg, got, test.want)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	offer := func(edit func(*wireOffer)) []byte {
		w := toWire(testOffer())
		edit(&w)
		b, err := encode(msgOffer, w)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	body := func(typ msgType, s string) []byte { return append([]byte{wireVersion, byte(typ)}, s...) }
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"too short", []byte{wireVersion, byte(msgOffer)}, "2 bytes"},
		{"newer wire version", append([]byte{wireVersion + 1, byte(msgOffer)}, "{}"...), "wire version 2"},
		{"unknown type", body(99, "{}"), "unknown message type 99"},
		{"not json", body(msgOffer, "{nope"), "invalid character"},
		{"oversized", body(msgOffer, `{"node":"`+strings.Repeat("x", maxMessageBytes)+`"}`), "exceeds"},
		{"no node", offer(func(w *wireOffer) { w.Node = "" }), "empty node name"},
		{"version 0", offer(func(w *wireOffer) { w.Version = 0 }), "version is 0"},
		{"foreign instrument", offer(func(w *wireOffer) { w.Instruments[0].ID = "rutgers/krios" }), "is not psc/NAME"},
		{"negative gpus", offer(func(w *wireOffer) { w.Compute[0].GPUs = -1 }), "gpus -1"},
		{"too many instruments", offer(func(w *wireOffer) {
			for i := range maxInstruments + 1 {
				w.Instruments = append(w.Instruments, wireInstrument{ID: fmt.Sprintf("psc/i%d", i)})
			}
		}), "at most 256"},
		{"too many software", offer(func(w *wireOffer) {
			for i := range maxSoftware + 1 {
				w.Compute[0].Software[fmt.Sprint(i)] = "1"
			}
		}), "66 software entries; at most 64"},
		{"bad key op", body(msgKeyOp, `{"id":"a","op":"drop","key":"AAAAAAAAAAAAAAAAAAAAAA==","from":"x"}`), `unknown key operation "drop"`},
		{"short key", body(msgKeyOp, `{"id":"a","op":"use","key":"AAAA","from":"x"}`), "key size"},
		{"ack without id", body(msgKeyAck, `{"from":"x"}`), "id of 0 bytes"},
		{"leave without node", body(msgLeave, `{}`), "empty node name"},
		{"state with a bad offer", body(msgState, `{"offers":[{"node":"a","site":"b","version":0}]}`), `offer of "a": offer version is 0`},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			m, err := decode(test.msg)
			if err == nil {
				t.Fatalf("decode(%.60q) = %+v, nil; want an error", test.msg, m)
			}
			if !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), test.want) {
				t.Errorf("decode(%.60q) = %v, want errMalformed containing %q", test.msg, err, test.want)
			}
		})
	}
}

func TestSameContent(t *testing.T) {
	a := testOffer()
	b := cloneOffer(a)
	b.Version++
	if !sameContent(a, b) {
		t.Error("sameContent ignores the version: got false")
	}
	b.Compute[0].Software = nil
	a.Compute[0].Software = map[string]string{}
	if !sameContent(a, b) {
		t.Error("sameContent(nil software, empty software) = false, want true")
	}
	b.Instruments[0].Status = StatusOffline
	if sameContent(a, b) {
		t.Error("sameContent with a different status = true")
	}
}

func TestMeta(t *testing.T) {
	if got := decodeMeta(encodeMeta("psc", 512)); got != "psc" {
		t.Errorf("decodeMeta(encodeMeta(psc)) = %q", got)
	}
	if got := encodeMeta("psc", 3); got != nil {
		t.Errorf("encodeMeta over the limit = %v, want nil", got)
	}
	for _, b := range [][]byte{nil, {metaVersion}, {2, 'p'}, append([]byte{metaVersion}, "a b"...)} {
		if got := decodeMeta(b); got != "" {
			t.Errorf("decodeMeta(%q) = %q, want \"\"", b, got)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder: it must never panic,
// and whatever it accepts must encode back to something that decodes to
// the same message.
func FuzzDecode(f *testing.F) {
	o := testOffer()
	seeds := [][]byte{
		mustEncode(encodeOffer(o)),
		mustEncode(encodeState([]Offer{o})),
		mustEncode(encodeKeyOp(keyOp{ID: "1", Op: opInstall, Key: testKey, From: "a"})),
		mustEncode(encodeKeyAck(keyAck{ID: "1", From: "a"})),
		mustEncode(encodeLeave(leaveIntent{Node: "a"})),
		{wireVersion, byte(msgOffer), '{', '}'},
		{wireVersion, byte(msgState), 'n', 'u', 'l', 'l'},
		{wireVersion},
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		again, err := reencode(m)
		if err != nil {
			t.Fatalf("decode accepted %q but re-encoding failed: %v", b, err)
		}
		m2, err := decode(again)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", again, err)
		}
		b2, _ := reencode(m2)
		if !bytes.Equal(again, b2) {
			t.Fatalf("encoding is not stable: %q then %q", again, b2)
		}
	})
}

func reencode(m message) ([]byte, error) {
	switch m.typ {
	case msgOffer:
		return encodeOffer(m.offer)
	case msgState:
		return encodeState(m.state)
	case msgKeyOp:
		return encodeKeyOp(m.keyOp)
	case msgKeyAck:
		return encodeKeyAck(m.keyAck)
	case msgLeave:
		return encodeLeave(m.leave)
	}
	return nil, fmt.Errorf("type %d", m.typ)
}
