package oidcissuer

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// userCodeAlphabet has no vowels (no words by accident) and no letters that
// read alike, as RFC 8628 section 6.1 suggests: 20^8 codes, about 34 bits.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

type deviceState int

const (
	devicePending deviceState = iota
	deviceApproved
	deviceDenied
)

// deviceGrant is one RFC 8628 device authorization in progress.
type deviceGrant struct {
	clientID string
	userCode string
	state    deviceState
	user     User
	authTime time.Time
	expires  time.Time
	interval time.Duration
	lastPoll time.Time
}

func (is *Issuer) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body is not a form")
		return
	}
	clientID, terr := is.publicClient(r)
	if terr != nil {
		oauthError(w, terr.status, terr.code, terr.description)
		return
	}
	if !slices.Contains(strings.Fields(r.PostForm.Get("scope")), "openid") {
		oauthError(w, http.StatusBadRequest, "invalid_scope", "the openid scope is required")
		return
	}
	deviceCode, userCode := is.startDevice(clientID)
	verify := is.url + "/device"
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               deviceCode,
		"user_code":                 userCode,
		"verification_uri":          verify,
		"verification_uri_complete": verify + "?user_code=" + url.QueryEscape(userCode),
		"expires_in":                int64(deviceCodeTTL / time.Second),
		"interval":                  int64(is.cfg.DevicePollInterval / time.Second),
	})
	is.log.Info("oidc device login started", "client", clientID, "user_code", userCode)
}

func (is *Issuer) startDevice(clientID string) (deviceCode, userCode string) {
	now := is.cfg.Now()
	is.mu.Lock()
	defer is.mu.Unlock()
	for dc, dg := range is.devices {
		if !now.Before(dg.expires) {
			is.forgetDevice(dc, dg)
		}
	}
	deviceCode = rand.Text()
	for userCode == "" || is.userCodes[userCode] != "" {
		userCode = newUserCode()
	}
	is.devices[deviceCode] = &deviceGrant{
		clientID: clientID,
		userCode: userCode,
		expires:  now.Add(deviceCodeTTL),
		interval: is.cfg.DevicePollInterval,
		lastPoll: now,
	}
	is.userCodes[userCode] = deviceCode
	return deviceCode, userCode
}

// newUserCode draws eight letters uniformly (bytes of 240 and up are
// rejected, so the modulo has no bias) and formats them ABCD-EFGH.
func newUserCode() string {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 9 {
		if b.Len() == 4 {
			b.WriteByte('-')
		}
		for {
			_, _ = rand.Read(buf) // crypto/rand.Read never fails
			if buf[0] < 240 {
				break
			}
		}
		b.WriteByte(userCodeAlphabet[int(buf[0])%len(userCodeAlphabet)])
	}
	return b.String()
}

// normalizeUserCode forgives what people do when typing a code: lower case,
// a missing or extra dash, spaces.
func normalizeUserCode(s string) string {
	var letters []byte
	for _, c := range []byte(strings.ToUpper(s)) {
		if c >= 'A' && c <= 'Z' {
			letters = append(letters, c)
		}
	}
	if len(letters) != 8 {
		return string(letters)
	}
	return string(letters[:4]) + "-" + string(letters[4:])
}

// redeemDevice answers a device_code token request with the RFC 8628
// section 3.5 errors until the person decides.
func (is *Issuer) redeemDevice(clientID, deviceCode string) (grant, *tokenError) {
	now := is.cfg.Now()
	is.mu.Lock()
	defer is.mu.Unlock()
	dg, ok := is.devices[deviceCode]
	switch {
	case !ok:
		return grant{}, invalidGrant("the device code is unknown or already used")
	case dg.clientID != clientID:
		return grant{}, invalidGrant("the device code was issued to another client")
	case !now.Before(dg.expires):
		is.forgetDevice(deviceCode, dg)
		return grant{}, &tokenError{http.StatusBadRequest, "expired_token", "the device code expired before it was approved"}
	case dg.state == deviceDenied:
		is.forgetDevice(deviceCode, dg)
		return grant{}, &tokenError{http.StatusBadRequest, "access_denied", "the login was denied"}
	case dg.state == deviceApproved:
		is.forgetDevice(deviceCode, dg)
		return grant{user: dg.user, authTime: dg.authTime}, nil
	}
	// Client timers fire a little early or late; push back only on a client
	// that clearly ignores the interval.
	tooSoon := now.Sub(dg.lastPoll) < dg.interval*3/4
	dg.lastPoll = now
	if tooSoon {
		dg.interval += 5 * time.Second // RFC 8628 section 3.5
		return grant{}, &tokenError{http.StatusBadRequest, "slow_down", fmt.Sprintf("poll no more often than every %s", dg.interval)}
	}
	return grant{}, &tokenError{http.StatusBadRequest, "authorization_pending", "the login has not been approved yet"}
}

// forgetDevice removes a grant; the caller holds is.mu. A decided grant's
// user code may already belong to a newer grant, which must keep it.
func (is *Issuer) forgetDevice(deviceCode string, dg *deviceGrant) {
	delete(is.devices, deviceCode)
	if is.userCodes[dg.userCode] == deviceCode {
		delete(is.userCodes, dg.userCode)
	}
}

func (is *Issuer) handleDeviceForm(w http.ResponseWriter, r *http.Request) {
	renderPage(w, http.StatusOK, devicePage, deviceView{UserCode: normalizeUserCode(r.URL.Query().Get("user_code"))})
}

func (is *Issuer) handleDeviceApprove(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		renderPage(w, http.StatusBadRequest, errorPage, errorView{Message: "the form could not be read"})
		return
	}
	view := deviceView{UserCode: normalizeUserCode(r.PostForm.Get("user_code"))}
	// Credentials first: whether a code exists is only told to people who
	// can log in, which keeps codes from being probed anonymously.
	user, ok := is.authenticate(r.PostForm.Get("username"), r.PostForm.Get("password"))
	if !ok {
		view.Error = "invalid username or password"
		renderPage(w, http.StatusForbidden, devicePage, view)
		return
	}
	action := r.PostForm.Get("action")
	if action != "approve" && action != "deny" {
		view.Error = "choose Approve or Deny"
		renderPage(w, http.StatusBadRequest, devicePage, view)
		return
	}
	if err := is.decideDevice(view.UserCode, user, action == "approve"); err != nil {
		view.Error = err.Error()
		renderPage(w, http.StatusBadRequest, devicePage, view)
		return
	}
	is.log.Info("oidc device login decided", "user_code", view.UserCode, "sub", user.Subject, "action", action)
	if action == "deny" {
		renderPage(w, http.StatusOK, donePage, doneView{"Login denied", "The device will not be logged in. You may close this window."})
		return
	}
	renderPage(w, http.StatusOK, donePage, doneView{"Device approved", "Return to your terminal. You may close this window."})
}

// decideDevice records a person's decision on a pending device login. The
// user code is spent by the decision, so it cannot be approved twice.
func (is *Issuer) decideDevice(userCode string, u User, approve bool) error {
	now := is.cfg.Now()
	is.mu.Lock()
	defer is.mu.Unlock()
	dg := is.devices[is.userCodes[userCode]]
	if dg == nil || !now.Before(dg.expires) || dg.state != devicePending {
		return errors.New("unknown or expired code; check the code your terminal shows")
	}
	dg.state, dg.user, dg.authTime = deviceDenied, u, now
	if approve {
		dg.state = deviceApproved
	}
	delete(is.userCodes, userCode)
	return nil
}
