package gossip

import (
	"context"
	"log"
	"log/slog"
	"regexp"
	"strings"
)

// newMemberlistLogger returns the *log.Logger memberlist wants, writing to
// l at the level memberlist's prefix names. onSuspect, if not nil, is
// called with the name of each member memberlist starts to suspect.
func newMemberlistLogger(l *slog.Logger, onSuspect func(string)) *log.Logger {
	return log.New(logBridge{l.With("component", "memberlist"), onSuspect}, "", 0)
}

// logBridge turns each line memberlist writes into one slog record.
type logBridge struct {
	l         *slog.Logger
	onSuspect func(string)
}

// suspectLine is what memberlist logs when its probe of a member fails and
// it starts to suspect it (state.go, probeNode).
var suspectLine = regexp.MustCompile(`^Suspect (\S+) has failed, no acks received$`)

func (b logBridge) Write(p []byte) (int, error) {
	level, msg := classify(string(p))
	b.l.Log(context.Background(), level, msg)
	if m := suspectLine.FindStringSubmatch(msg); m != nil && b.onSuspect != nil {
		b.onSuspect(m[1])
	}
	return len(p), nil
}

var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
	{"Err:", slog.LevelError},
}

// classify maps a memberlist log line ("[WARN] memberlist: Refuting a
// suspect message") to a level and the message without its prefixes.
// Lines without a known prefix are logged at Info.
func classify(line string) (slog.Level, string) {
	line = strings.TrimSpace(line)
	level := slog.LevelInfo
	for _, p := range levelPrefixes {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			level, line = p.level, strings.TrimSpace(rest)
			break
		}
	}
	return level, strings.TrimPrefix(line, "memberlist: ")
}
