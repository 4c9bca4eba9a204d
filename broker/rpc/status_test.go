package rpc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/client"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		code      codes.Code
		retrySafe bool
	}{
		{"invalid", broker.Errorf(broker.ErrInvalid, "bad name"), codes.InvalidArgument, false},
		{"not found", broker.Errorf(broker.ErrNotFound, "no such user"), codes.NotFound, false},
		{"exists", broker.Errorf(broker.ErrExists, "taken"), codes.AlreadyExists, false},
		{"precondition", broker.Errorf(broker.ErrPrecondition, "suspended"), codes.FailedPrecondition, false},
		{"exhausted", broker.Errorf(broker.ErrExhausted, "range full"), codes.ResourceExhausted, false},
		{"not leader", &broker.NotLeaderError{LeaderID: "a", LeaderAPI: "127.0.0.1:1"}, codes.Unavailable, true},
		{"wrapped unavailable", fmt.Errorf("join: %w", broker.Errorf(broker.ErrUnavailable, "no leader")), codes.Unavailable, true},
		{"ambiguous", fmt.Errorf("%w: leadership lost", broker.ErrAmbiguous), codes.Unknown, false},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, false},
		{"other", errors.New("disk on fire"), codes.Internal, false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			err := toStatus(test.err)
			if got := status.Code(err); got != test.code {
				t.Errorf("toStatus(%v) code = %v, want %v", test.err, got, test.code)
			}
			if got := status.Convert(err).Message(); got != test.err.Error() {
				t.Errorf("toStatus(%v) message = %q, want the domain message", test.err, got)
			}
			if got := client.RetrySafe(err); got != test.retrySafe {
				t.Errorf("RetrySafe(toStatus(%v)) = %v, want %v", test.err, got, test.retrySafe)
			}
		})
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}
