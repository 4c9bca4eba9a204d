// Package client is the Go client of a labfed broker's API, used by the CLI
// and by site agents.
//
// Requests that fail with Unavailable are retried for a while when retrying
// is safe: when the broker said the request had no effect (no leader yet,
// leader changed), or, for reads, whenever the broker could not be reached.
// Writes whose outcome is unknown are never retried blindly.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// Options configure a client.
type Options struct {
	// RetryFor bounds how long a retry-safe request is retried; zero means
	// 10 seconds, negative disables retries.
	RetryFor time.Duration
	// DevInsecure connects without TLS, to a broker run with --dev-insecure.
	DevInsecure bool
	// TLS configures the connection otherwise (see broker/pki).
	TLS *tls.Config
	// Session, when set, is a session credential (from labfed login) sent
	// with every request; the broker then acts for its user rather than
	// for the connection's certificate.
	Session string
}

// Client talks to one broker; writes reach the leader through it.
type Client struct {
	conn      *grpc.ClientConn
	Directory pb.DirectoryServiceClient
	Cluster   pb.ClusterServiceClient
	Login     pb.LoginServiceClient
	Discovery pb.DiscoveryServiceClient
}

// Dial connects to the broker at addr (HOST:PORT). The connection is made
// lazily; errors surface on the first request.
func Dial(addr string, o Options) (*Client, error) {
	if o.RetryFor == 0 {
		o.RetryFor = 10 * time.Second
	}
	opts := []grpc.DialOption{grpc.WithChainUnaryInterceptor(retry(o.RetryFor))}
	switch {
	case o.DevInsecure:
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	case o.TLS != nil:
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(o.TLS)))
	default:
		return nil, errors.New("no transport security configured: give the federation CA (and a certificate), or use development mode")
	}
	if o.Session != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: o.Session, secure: !o.DevInsecure}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn: conn, Directory: pb.NewDirectoryServiceClient(conn), Cluster: pb.NewClusterServiceClient(conn),
		Login: pb.NewLoginServiceClient(conn), Discovery: pb.NewDiscoveryServiceClient(conn),
	}, nil
}

// bearer sends a session credential in the authorization header.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity keeps the credential off plaintext connections,
// except to a development broker the user explicitly chose.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// Conn is the underlying connection, for services without a field here.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// IsRead reports whether a full gRPC method name is a read-only call.
func IsRead(method string) bool {
	i := strings.LastIndex(method, "/")
	name := method[i+1:]
	for _, p := range []string{"List", "Get", "Status", "MapUser", "WhoAmI", "Place"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// RetrySafe reports whether err says the request had no effect.
func RetrySafe(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

func retry(limit time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		deadline := time.Now().Add(limit)
		backoff := 50 * time.Millisecond
		for {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil || limit < 0 || time.Now().After(deadline) {
				return err
			}
			if !RetrySafe(err) && !(IsRead(method) && status.Code(err) == codes.Unavailable) {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}
