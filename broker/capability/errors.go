package capability

import (
	"errors"
	"fmt"
)

// ErrRefused is wrapped by every *RefusedError, so callers can test
// errors.Is(err, capability.ErrRefused) and map it to "unauthenticated".
var ErrRefused = errors.New("capability token refused")

// RefusedError says why Verify refused a token. Code is a stable short
// identifier for programs and tests ("alg", "kid-unknown", "exp", …);
// Reason is one line for a person.
type RefusedError struct {
	Code   string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("capability token refused (%s): %s", e.Code, e.Reason)
}

// Unwrap lets errors.Is(err, ErrRefused) work.
func (e *RefusedError) Unwrap() error { return ErrRefused }

func refuse(code, format string, args ...any) *RefusedError {
	return &RefusedError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Refusal codes. Each check of Verify has its own, so a test can tell
// which check refused a token.
const (
	CodeSize        = "size"         // token longer than MaxTokenSize
	CodeCompact     = "compact"      // not three base64url segments
	CodeBase64      = "base64"       // a segment is not canonical unpadded base64url
	CodeHeader      = "header"       // header is not a JSON object of strings
	CodeHeaderDup   = "header-dup"   // a header key appears twice
	CodeAlg         = "alg"          // alg is not exactly EdDSA
	CodeTyp         = "typ"          // typ is not exactly labfed-cap+jwt
	CodeKID         = "kid"          // kid missing or empty
	CodeJWK         = "jwk"          // a key is embedded in the header
	CodeJKU         = "jku"          // a key URL is named in the header
	CodeX5U         = "x5u"          // a certificate URL is named in the header
	CodeX5C         = "x5c"          // a certificate chain is embedded in the header
	CodeX5T         = "x5t"          // a certificate thumbprint is named in the header
	CodeCrit        = "crit"         // critical extensions are demanded
	CodeHeaderParam = "header-param" // some other header parameter
	CodeKIDUnknown  = "kid-unknown"  // kid not in the trust bundle (never published or removed)
	CodeKeyRevoked  = "key-revoked"  // kid names a revoked key
	CodeKeyStatus   = "key-status"   // kid names a key neither active nor retiring
	CodeKeyExpired  = "key-expired"  // the key's validity window has ended
	CodeKeyInvalid  = "key-invalid"  // the bundle's entry for kid is malformed
	CodeSignature   = "signature"    // the Ed25519 signature does not verify
	CodeClaims      = "claims"       // claims are not a JSON object, or carry unknown claims
	CodeClaimsDup   = "claims-dup"   // a claim key appears twice
	CodeVer         = "ver"          // ver is not "1"
	CodeIss         = "iss"          // iss is not the key's issuer
	CodeAud         = "aud"          // aud is not this site
	CodeSub         = "sub"          // sub missing
	CodeJTI         = "jti"          // jti missing
	CodeExp         = "exp"          // expired, or exp missing
	CodeNbf         = "nbf"          // not valid yet, or nbf missing
	CodeIat         = "iat"          // iat missing or in the future
	CodeLifetime    = "lifetime"     // exp-nbf not positive or above MaxLifetime
	CodeKeyWindow   = "key-window"   // iat is outside the key's validity window
	CodePOSIX       = "posix"        // posix claim malformed
	CodeGrant       = "grant"        // grant claim malformed
	CodeScope       = "scope"        // scope missing or a scope does not parse
	CodeScopeSite   = "scope-site"   // a scope names a resource at a site other than aud
	CodeScopeDenied = "scope-denied" // no scope covers the one asked for
	CodeRevoked     = "revoked"      // the Revoked callback refused it
)
