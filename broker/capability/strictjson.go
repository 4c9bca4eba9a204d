package capability

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// maxDepth bounds the nesting of header and claims; a valid token nests
// two deep (claims → posix → groups).
const maxDepth = 4

// dupKeyError lets decodeObject's callers pick their refusal code.
type dupKeyError struct{ key string }

func (e *dupKeyError) Error() string { return "key " + quote(e.key) + " appears more than once" }

// decodeObject parses b as one JSON object whose keys, at every depth, are
// unique, and returns its members. encoding/json keeps the last of two
// equal keys, so two "aud" (or "alg") would let a token say one thing to
// one parser and another to the next: refuse them instead. Keys are
// compared after unescaping, so "a\u0075d" and "aud" are the same key.
func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("it is not valid UTF-8")
	}
	if !json.Valid(b) {
		return nil, errors.New("it is not JSON")
	}
	// From here on b is known to be valid JSON, which keeps the scanner
	// below small: it only has to find where things end.
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, errors.New("it is not a JSON object")
	}
	m := make(map[string]json.RawMessage, 12)
	if _, err := scanObject(b, i, 1, m); err != nil {
		return nil, err
	}
	return m, nil
}

// scanObject scans the object starting at b[i] == '{' and returns the
// index after it. If top is not nil it receives the object's members.
func scanObject(b []byte, i, depth int, top map[string]json.RawMessage) (int, error) {
	if depth > maxDepth {
		return 0, errors.New("it nests too deep")
	}
	var keys []string
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return i + 1, nil
	}
	for {
		end := scanString(b, i)
		key, err := unquote(b[i:end])
		if err != nil {
			return 0, err
		}
		for _, k := range keys {
			if k == key {
				return 0, &dupKeyError{key}
			}
		}
		keys = append(keys, key)
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // ':'
		vstart := i
		if i, err = scanValue(b, i, depth); err != nil {
			return 0, err
		}
		if top != nil {
			top[key] = json.RawMessage(b[vstart:i])
		}
		i = skipSpace(b, i)
		if b[i] == '}' {
			return i + 1, nil
		}
		i = skipSpace(b, i+1) // ','
	}
}

// scanValue returns the index after the value starting at b[i].
func scanValue(b []byte, i, depth int) (int, error) {
	switch b[i] {
	case '{':
		return scanObject(b, i, depth+1, nil)
	case '[':
		if depth+1 > maxDepth {
			return 0, errors.New("it nests too deep")
		}
		i = skipSpace(b, i+1)
		if b[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = scanValue(b, i, depth+1); err != nil {
				return 0, err
			}
			i = skipSpace(b, i)
			if b[i] == ']' {
				return i + 1, nil
			}
			i = skipSpace(b, i+1) // ','
		}
	case '"':
		return scanString(b, i), nil
	}
	for i < len(b) && !strings.ContainsRune(",]} \t\r\n", rune(b[i])) {
		i++
	}
	return i, nil
}

// scanString returns the index after the string starting at b[i] == '"'.
func scanString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// unquote decodes a JSON string literal, fast when it has no escapes.
func unquote(lit []byte) (string, error) {
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1]), nil
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", errors.New("it is not JSON")
	}
	return s, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// quote shortens and quotes a value taken from a token for a message, so
// a hostile token cannot fill a log line.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}
