package gossip

import (
	"log/slog"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		{"[INFO] memberlist: Suspect psc-1 has failed, no acks received", slog.LevelInfo, "Suspect psc-1 has failed, no acks received"},
		{"[WARN] memberlist: Refuting a suspect message (from: a)", slog.LevelWarn, "Refuting a suspect message (from: a)"},
		{"[ERR] memberlist: Decrypt packet failed: x", slog.LevelError, "Decrypt packet failed: x"},
		{"[ERROR] memberlist: Failed to compress payload: x", slog.LevelError, "Failed to compress payload: x"},
		{"Err: Could not set the deadline: x", slog.LevelError, "Could not set the deadline: x"},
		{"[TRACE] memberlist: x", slog.LevelDebug - 4, "x"},
		{"memberlist: no level", slog.LevelInfo, "no level"},
	}
	for _, test := range tests {
		level, msg := classify(test.line)
		if level != test.level || msg != test.msg {
			t.Errorf("classify(%q) = %v, %q, want %v, %q", test.line, level, msg, test.level, test.msg)
		}
	}
}

func TestLogBridge(t *testing.T) {
	logs := newLogRecorder(t)
	var suspects []string
	l := newMemberlistLogger(logs.logger(), func(name string) { suspects = append(suspects, name) })
	l.Printf("[WARN] memberlist: Refuting a dead message (from: %s)", "psc-1")
	l.Printf("[DEBUG] memberlist: dropped below Info")
	l.Printf("[INFO] memberlist: Suspect %s has failed, no acks received", "ncsa-2")
	got := logs.matching("memberlist")
	if len(got) != 2 || !strings.Contains(got[0], "WARN Refuting a dead message (from: psc-1) component=memberlist") {
		t.Errorf("logged %q, want a WARN and an INFO line from memberlist", got)
	}
	if len(suspects) != 1 || suspects[0] != "ncsa-2" {
		t.Errorf("suspects reported = %q, want [ncsa-2]", suspects)
	}
}
