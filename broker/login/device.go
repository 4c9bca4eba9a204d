package login

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/oauth2"

	"github.com/labfed/labfed/broker"
)

// Device logs in with the device authorization grant (RFC 8628), for a
// terminal without a browser: prompt is called once with where to go and
// which code to enter (verificationURIComplete may be empty), and Device
// polls the issuer until the person approves, denies, the code expires or
// ctx ends. It returns the verified raw ID token.
func Device(ctx context.Context, cfg ClientConfig, prompt func(verificationURI, userCode, verificationURIComplete string)) (string, error) {
	ctx, f, err := newFlow(ctx, cfg)
	if err != nil {
		return "", err
	}
	if f.oauth.Endpoint.DeviceAuthURL == "" {
		return "", broker.Errorf(broker.ErrPrecondition, "oidc issuer %s offers no device login (its discovery document has no device_authorization_endpoint); log in with a browser instead", f.issuer)
	}
	da, err := f.oauth.DeviceAuth(ctx)
	if err != nil {
		return "", tokenRequestError(ctx, f.issuer, err)
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return "", broker.Errorf(broker.ErrInvalid, "oidc issuer %s answered the device login without a device code, user code or verification URI", f.issuer)
	}
	prompt(da.VerificationURI, da.UserCode, da.VerificationURIComplete)
	tok, err := f.oauth.DeviceAccessToken(ctx, da)
	if err != nil {
		return "", deviceError(ctx, f.issuer, da, err)
	}
	return f.idToken(ctx, tok, "")
}

// deviceError explains why polling ended without a token.
func deviceError(ctx context.Context, issuer string, da *oauth2.DeviceAuthResponse, err error) error {
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "access_denied":
		return broker.Errorf(broker.ErrPrecondition, "the login with code %s was denied at %s", da.UserCode, da.VerificationURI)
	case errors.As(err, &re) && re.ErrorCode == "expired_token",
		ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded): // oauth2 stops at the code's expiry
		return broker.Errorf(broker.ErrPrecondition, "code %s expired before it was approved; start the device login again", da.UserCode)
	case ctx.Err() != nil:
		return fmt.Errorf("gave up waiting for approval of code %s: %w", da.UserCode, ctx.Err())
	}
	return tokenRequestError(ctx, issuer, err)
}
