package node

import (
	"context"

	"github.com/labfed/labfed/broker/login"
	"github.com/labfed/labfed/broker/rpc"
)

// newVerifier builds the OIDC ID token verifier for the configured issuers;
// nil when none are configured. Issuers are discovered on first use, so a
// broker starts even while its issuer is down.
func newVerifier(c *Config) (func(context.Context, string) (rpc.IDToken, error), error) {
	if len(c.OIDC.Issuers) == 0 {
		return nil, nil
	}
	var issuers []login.Issuer
	for _, is := range c.OIDC.Issuers {
		issuers = append(issuers, login.Issuer{URL: is.URL, ClientIDs: is.ClientIDs, CAFile: is.CAFile})
	}
	v, err := login.NewVerifier(issuers)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, raw string) (rpc.IDToken, error) {
		id, err := v.Verify(ctx, raw)
		if err != nil {
			return rpc.IDToken{}, err
		}
		return rpc.IDToken{Issuer: id.Issuer, Subject: id.Subject, Email: id.Email, Expiry: id.Expiry}, nil
	}, nil
}
