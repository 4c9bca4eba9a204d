package oidcissuer

import (
	"encoding/json"
	"html/template"
	"net/http"
)

// The pages are deliberately plain: a person reads them in a browser, and
// Browse reads them as a program, finding the first form and the element
// with class "error".
const pageHead = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labfed demo issuer</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}label{display:block;margin:.6em 0}.error{color:#b00}</style>
</head><body>
`

var (
	loginPage = template.Must(template.New("login").Parse(pageHead + `<h1>Sign in</h1>
<p>{{.Req.ClientID}} asks to confirm who you are.</p>
{{with .Error}}<p class="error">{{.}}</p>{{end}}
<form method="post" action="/authorize">
{{with .Req}}<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="response_type" value="{{.ResponseType}}">
<input type="hidden" name="scope" value="{{.Scope}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="nonce" value="{{.Nonce}}">
<input type="hidden" name="code_challenge" value="{{.Challenge}}">
<input type="hidden" name="code_challenge_method" value="{{.ChallengeMeth}}">{{end}}
<label>Username <input name="username" autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form></body></html>
`))

	devicePage = template.Must(template.New("device").Parse(pageHead + `<h1>Approve a device login</h1>
<p>Enter the code your terminal shows, and sign in to approve or deny it.</p>
{{with .Error}}<p class="error">{{.}}</p>{{end}}
<form method="post" action="/device">
<label>Code <input name="user_code" value="{{.UserCode}}" autocomplete="off"></label>
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit" name="action" value="approve">Approve</button>
<button type="submit" name="action" value="deny">Deny</button>
</form></body></html>
`))

	errorPage = template.Must(template.New("error").Parse(pageHead + `<h1>Cannot continue</h1>
<p class="error">{{.Message}}</p>
</body></html>
`))

	donePage = template.Must(template.New("done").Parse(pageHead + `<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
</body></html>
`))
)

type loginView struct {
	Req   authRequest
	Error string
}

type deviceView struct {
	UserCode string
	Error    string
}

type errorView struct{ Message string }

type doneView struct{ Title, Message string }

// renderPage writes an HTML page that no one may frame (the login form must
// not be overlaid by another site) or cache (it may show a code).
func renderPage(w http.ResponseWriter, status int, t *template.Template, data any) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = t.Execute(w, data) // the status is sent; a failed write means the browser left
}

// writeJSON writes a JSON response that caches must not keep: token
// responses carry credentials (RFC 6749 section 5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError writes an RFC 6749 section 5.2 error response.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}
