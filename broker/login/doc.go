// Package login proves who a person is with OpenID Connect: the broker
// verifies ID tokens from the issuers its site trusts, and the CLI obtains
// them as a public native client.
//
// # Broker side
//
// A Verifier checks a raw ID token against the configured Issuers: the
// unverified iss claim only selects which issuer's keys and rules apply, then
// go-oidc checks the signature against that issuer's JWKS, the issuer, the
// expiry and the algorithm (RS256, ES256 or EdDSA), and the Verifier checks
// that the audience is one of the issuer's client ids and that the token was
// issued within the last ten minutes. The short age limit bounds how long a
// captured token can be replayed to obtain a session.
//
// Discovery happens on first use of each issuer and is kept once it
// succeeds, so a broker starts, and keeps its other issuers working, while an
// issuer is down; the next token for that issuer tries again.
//
// The issuer's keys (JWKS) are fetched on first use and cached. A token
// signed with a cached key never causes a request to the issuer. A token
// naming a kid that is not cached may be signed with a key the issuer has
// just rotated to, or be a forgery meant to make the broker hammer the
// issuer, so it causes at most one fetch per issuer per refresh interval
// (30s, WithKeyRefreshInterval), shared by every concurrent caller. Until
// the interval has passed, the last fetch's result stands: a kid it did not
// return is refused at once, and a failed fetch is reported as the issuer
// being unavailable.
//
// Every refusal is a *broker.Error: ErrInvalid when the token is at fault,
// ErrUnavailable when the issuer could not be reached (retry later).
//
// # CLI side
//
// AuthCode runs the authorization code flow for native apps (RFC 8252) with
// PKCE S256 (RFC 7636): it listens on a random loopback port, has the caller
// open the issuer's login page, and exchanges the code that comes back.
// Device runs the device authorization grant (RFC 8628) for terminals with
// no browser. Both verify the ID token they obtain before returning it, so
// a misconfigured issuer or client id shows up at login rather than as a
// refusal from the broker.
package login
