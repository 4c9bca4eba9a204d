// Package capability mints and verifies labfed capability tokens: compact
// JWS tokens signed with Ed25519 by a broker and verified by a site against
// the federation's trust bundle.
//
// # Tokens
//
// The protected header is exactly {"alg":"EdDSA","kid":…,"typ":"labfed-cap+jwt"}.
// The claims are iss (issuing broker), sub (user id), aud (one site), exp,
// nbf, iat (integer NumericDates), jti, ver ("1"), scope (space-separated
// "action:resource" scopes with WLCG semantics), posix (the account at the
// audience site) and grant (the ids of the grants that justified it).
//
// [Signer.Sign] writes tokens with go-jose; verification does not use it.
//
// # Verification
//
// [Verifier.Verify] is deliberately narrower than JOSE: it parses the token
// itself rather than through a general JWS library, so that nothing the
// token says can choose the algorithm or the key. It accepts only the
// compact serialization, only EdDSA, only keys pinned in the [Bundle] by
// kid, and refuses every header parameter it does not understand
// (jwk, jku, x5u, x5c, x5t, crit, …), duplicate JSON keys (which
// encoding/json would silently resolve to the last one), unknown claims and
// non-canonical base64url. Every scope must name a resource at the aud
// site, since the broker addresses a token to its resource's site. Every
// refusal is a [*RefusedError] whose Code is stable and whose Reason says
// what was wrong in one line.
//
// # Caveats
//
// The Revoked callback runs last, on claims whose signature and validity
// have been checked; it must not block for long, since it runs on the
// request path of every operation the token authorizes.
package capability
