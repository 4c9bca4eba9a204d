package boltlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var codecLogs = []raft.Log{
	{},
	{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")},
	{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: []byte("conf"), Extensions: []byte("ext"), AppendedAt: appendedAt},
	{Index: 3, Term: 2, Type: raft.LogNoop, Data: []byte{}, Extensions: []byte{}},
	{Index: math.MaxUint64, Term: math.MaxUint64, Type: raft.LogType(math.MaxUint8), Data: bytes.Repeat([]byte{0xff}, 300)},
	{Index: 4, Term: 2, AppendedAt: time.Unix(-1, 999999999)},
	{Index: 5, Term: 2, AppendedAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)}, // outside UnixNano's range
	{Index: 6, Term: 2, AppendedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
}

func TestCodecRoundTrip(t *testing.T) {
	for _, want := range codecLogs {
		var got raft.Log
		if err := decodeLog(encodeLog(&want), &got); err != nil {
			t.Errorf("decodeLog(encodeLog(%s)) = %v, want nil", fmtLog(want), err)
			continue
		}
		if !sameLog(got, want) {
			t.Errorf("decodeLog(encodeLog(%s)) = %s, want the same", fmtLog(want), fmtLog(got))
		}
	}
}

// TestDecodeLogCopies checks a decoded entry shares no memory with its
// encoding, which for GetLog is bbolt's memory map.
func TestDecodeLogCopies(t *testing.T) {
	b := encodeLog(&raft.Log{Index: 1, Data: []byte("data"), Extensions: []byte("ext")})
	var l raft.Log
	if err := decodeLog(b, &l); err != nil {
		t.Fatalf("decodeLog() = %v, want nil", err)
	}
	for i := range b {
		b[i] = 0
	}
	if string(l.Data) != "data" || string(l.Extensions) != "ext" {
		t.Errorf("after zeroing the encoding, decoded Data, Extensions = %q, %q, want \"data\", \"ext\"", l.Data, l.Extensions)
	}
}

func TestDecodeLogCorrupt(t *testing.T) {
	full := encodeLog(&codecLogs[2])
	cases := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"version 0", []byte{0, 0, 0, 0, 0}},
		{"version 2", []byte{2, 0, 0, 0, 0}},
		{"unknown flag", []byte{formatV1, 1 << 7, 0, 0, 0}},
		{"index varint overflow", append([]byte{formatV1, 0, 0}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"nanoseconds out of range", binary.AppendUvarint([]byte{formatV1, flagAppendedAt, 0, 1, 1, 0}, uint64(time.Second))},
		{"data length past end", []byte{formatV1, flagData, 0, 1, 1, 5, 'a', 'b'}},
		{"data length huge", append([]byte{formatV1, flagData, 0, 1, 1}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)},
		{"extensions missing", []byte{formatV1, flagExtensions, 0, 1, 1}},
		{"trailing byte", append(append([]byte{}, full...), 0)},
	}
	// Every proper prefix of a valid encoding is truncated.
	for n := range len(full) {
		cases = append(cases, struct {
			name string
			b    []byte
		}{"prefix", full[:n]})
	}
	for _, tc := range cases {
		var l raft.Log
		if err := decodeLog(tc.b, &l); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeLog(%x) [%s] = %v, want an error wrapping errCorrupt", tc.b, tc.name, err)
		}
	}
}

// FuzzDecodeLog checks decodeLog never panics, and that what it accepts
// encodes to something that decodes to the same entry.
func FuzzDecodeLog(f *testing.F) {
	for _, l := range codecLogs {
		b := encodeLog(&l)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{formatV1, knownFlags, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("decodeLog(%x) = %v, want nil or an error wrapping errCorrupt", b, err)
			}
			return
		}
		var again raft.Log
		if err := decodeLog(encodeLog(&l), &again); err != nil {
			t.Fatalf("decodeLog(encodeLog(%s)) = %v, want nil", fmtLog(l), err)
		}
		if !sameLog(again, l) {
			t.Fatalf("decodeLog(encodeLog(%s)) = %s, want the same", fmtLog(l), fmtLog(again))
		}
	})
}
