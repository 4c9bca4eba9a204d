package oidcissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"
)

const grantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

// pkceVerifier is RFC 7636 section 4.1's code_verifier: 43 to 128
// unreserved characters.
var pkceVerifier = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// tokenError is an RFC 6749 section 5.2 refusal of a token request.
type tokenError struct {
	status      int
	code        string
	description string
}

func invalidGrant(format string, args ...any) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_grant", fmt.Sprintf(format, args...)}
}

// grant is what a redeemed code or device grant yields: who logged in, and
// the nonce and authentication time the ID token must repeat.
type grant struct {
	user     User
	nonce    string
	authTime time.Time
}

func (is *Issuer) handleToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body is not a form")
		return
	}
	clientID, terr := is.publicClient(r)
	var g grant
	if terr == nil {
		g, terr = is.redeem(clientID, r.PostForm)
	}
	if terr != nil {
		is.log.Info("oidc token request refused", "client", clientID, "error", terr.code, "reason", terr.description)
		oauthError(w, terr.status, terr.code, terr.description)
		return
	}
	is.log.Info("oidc tokens issued", "client", clientID, "sub", g.user.Subject)
	writeJSON(w, http.StatusOK, is.tokenResponse(clientID, g))
}

func (is *Issuer) redeem(clientID string, form url.Values) (grant, *tokenError) {
	switch gt := form.Get("grant_type"); gt {
	case "authorization_code":
		return is.redeemCode(clientID, form)
	case grantDeviceCode:
		return is.redeemDevice(clientID, form.Get("device_code"))
	default:
		return grant{}, &tokenError{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %s is not supported", quote(gt))}
	}
}

// publicClient identifies the client of a token request. Public clients
// have no secret; they send client_id in the body (RFC 6749 section 2.3.1),
// or some libraries send it as HTTP Basic with an empty password.
func (is *Issuer) publicClient(r *http.Request) (string, *tokenError) {
	id := r.PostForm.Get("client_id")
	if user, pass, ok := r.BasicAuth(); ok {
		user, err := url.QueryUnescape(user)
		switch {
		case err != nil || pass != "":
			return id, &tokenError{http.StatusUnauthorized, "invalid_client", "public clients have no secret"}
		case id != "" && id != user:
			return id, &tokenError{http.StatusBadRequest, "invalid_request", "client_id differs between the body and the Authorization header"}
		}
		id = user
	}
	if _, ok := is.clients[id]; !ok {
		return id, &tokenError{http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client_id %s", quote(id))}
	}
	return id, nil
}

// redeemCode checks an authorization_code grant: the code must be live and
// unspent, issued to this client for this redirect URI, and the verifier
// must hash to the challenge it was issued against.
func (is *Issuer) redeemCode(clientID string, form url.Values) (grant, *tokenError) {
	ac, ok := is.takeCode(form.Get("code"))
	switch {
	case !ok:
		return grant{}, invalidGrant("the authorization code is unknown or already used")
	case !is.cfg.Now().Before(ac.expires):
		return grant{}, invalidGrant("the authorization code expired")
	case ac.req.ClientID != clientID:
		return grant{}, invalidGrant("the authorization code was issued to another client")
	case ac.req.RedirectURI != form.Get("redirect_uri"):
		return grant{}, invalidGrant("redirect_uri does not match the authorization request")
	case !pkceVerifier.MatchString(form.Get("code_verifier")):
		return grant{}, invalidGrant("code_verifier is missing or malformed")
	case !challengeMatches(form.Get("code_verifier"), ac.req.Challenge):
		return grant{}, invalidGrant("code_verifier does not match the code_challenge")
	}
	return grant{user: ac.user, nonce: ac.req.Nonce, authTime: ac.authTime}, nil
}

func challengeMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

func (is *Issuer) tokenResponse(clientID string, g grant) map[string]any {
	now, u := is.cfg.Now(), g.user
	claims := map[string]any{
		"iss":            is.url,
		"sub":            u.Subject,
		"aud":            clientID,
		"iat":            now.Unix(),
		"exp":            now.Add(is.cfg.TokenTTL).Unix(),
		"auth_time":      g.authTime.Unix(),
		"email":          u.Email,
		"email_verified": true,
		"name":           u.Name,
	}
	if g.nonce != "" {
		claims["nonce"] = g.nonce
	}
	return map[string]any{
		"access_token": rand.Text(),
		"token_type":   "Bearer",
		"expires_in":   int64(is.cfg.TokenTTL / time.Second),
		"scope":        "openid email profile",
		"id_token":     is.SignIDToken(claims),
	}
}

// SignIDToken signs claims, whatever they say, as an RS256 JWS with the
// issuer's key and kid. Tests elsewhere use it to make hostile tokens that
// only claim checks can refuse. It panics if claims cannot be encoded as
// JSON, which only a programming error in a test can cause.
func (is *Issuer) SignIDToken(claims map[string]any) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("oidcissuer: encode claims: %v", err))
	}
	jws, err := is.signer.Sign(payload)
	if err != nil {
		panic(fmt.Sprintf("oidcissuer: sign: %v", err))
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		panic(fmt.Sprintf("oidcissuer: serialize: %v", err))
	}
	return s
}
