// Package broker holds labfed's vocabulary: identifiers, scopes, resources
// and the kinds of error every other package reports. It imports only the
// standard library so that every layer can speak it.
package broker

import (
	"errors"
	"fmt"
)

// Error kinds. Every error a user can cause wraps exactly one of these, so the
// RPC edge can map it to a status code with errors.Is and the user still reads
// the specific message.
var (
	// ErrInvalid means the request itself is malformed: a bad name, an
	// inverted range or window, an unknown action.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound means the request names something the directory does not
	// hold: an unknown site, user, project or grant.
	ErrNotFound = errors.New("not found")
	// ErrExists means the request would create something that already exists
	// or conflicts with something that does: a taken name, uid or window.
	ErrExists = errors.New("already exists")
	// ErrPrecondition means the request is well formed but the directory's
	// state does not allow it now: a suspended user, a range that cannot
	// shrink.
	ErrPrecondition = errors.New("failed precondition")
	// ErrExhausted means a site's uid or gid range has no number left.
	ErrExhausted = errors.New("resource exhausted")
	// ErrUnavailable means the federation cannot answer right now (no
	// leader, shutting down) and the request did not take effect; it is safe
	// to retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrAmbiguous means a write may or may not have taken effect: the
	// node lost leadership after the entry left it. Check with a read
	// before retrying.
	ErrAmbiguous = errors.New("outcome unknown")
)

// Error is an error a person reads: Msg says what was wrong and what to do,
// Kind is one of the Err* sentinels above.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap lets errors.Is(err, broker.ErrNotFound) work.
func (e *Error) Unwrap() error { return e.Kind }

// Errorf returns an *Error of the given kind with a formatted message.
func Errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the Err* sentinel that err wraps, or nil if it wraps none.
func KindOf(err error) error {
	for _, k := range []error{ErrInvalid, ErrNotFound, ErrExists, ErrPrecondition, ErrExhausted, ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
