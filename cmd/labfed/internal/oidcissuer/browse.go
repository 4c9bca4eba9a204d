package oidcissuer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// maxPage bounds how much of a page Browse reads.
const maxPage = 1 << 20

// Browse does what a person's browser does with an authorization URL: it
// opens the issuer's login page, submits its form with username and
// password, and follows the issuer's redirect to the client's loopback
// callback. client must trust the issuer (see Issuer.Client). When the issuer
// refuses the request by redirecting with an error, Browse still delivers
// that redirect to the callback, as a browser would, and returns the error.
//
// For safety Browse follows redirects only to loopback addresses.
func Browse(client *http.Client, authURL, username, password string) error {
	c := withoutRedirects(client)
	resp, err := c.Get(authURL)
	if err != nil {
		return fmt.Errorf("open the login page: %w", err)
	}
	doc, err := readPage(resp)
	if err != nil {
		return err
	}
	if isRedirect(resp.StatusCode) {
		return refusedByRedirect(c, resp)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the issuer refused the login page (%s): %s", resp.Status, errorText(doc))
	}
	action, fields, err := firstForm(doc, resp.Request.URL)
	if err != nil {
		return err
	}
	fields.Set("username", username)
	fields.Set("password", password)
	resp, err = c.PostForm(action, fields)
	if err != nil {
		return fmt.Errorf("submit the login form: %w", err)
	}
	doc, err = readPage(resp)
	if err != nil {
		return err
	}
	if !isRedirect(resp.StatusCode) {
		return fmt.Errorf("the issuer did not accept the login (%s): %s", resp.Status, errorText(doc))
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("the issuer's redirect has no usable Location: %w", err)
	}
	return visitCallback(c, loc)
}

// ApproveDevice approves a pending device login as the person would on the
// /device page: it opens the page for userCode and submits it with username
// and password.
func (is *Issuer) ApproveDevice(userCode, username, password string) error {
	c := is.Client()
	resp, err := c.Get(is.url + "/device?user_code=" + url.QueryEscape(userCode))
	if err != nil {
		return fmt.Errorf("open the device page: %w", err)
	}
	doc, err := readPage(resp)
	if err != nil {
		return err
	}
	action, fields, err := firstForm(doc, resp.Request.URL)
	if err != nil {
		return err
	}
	fields.Set("username", username)
	fields.Set("password", password)
	fields.Set("action", "approve")
	resp, err = c.PostForm(action, fields)
	if err != nil {
		return fmt.Errorf("submit the device form: %w", err)
	}
	if doc, err = readPage(resp); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the issuer did not approve user code %s (%s): %s", userCode, resp.Status, errorText(doc))
	}
	return nil
}

func withoutRedirects(client *http.Client) *http.Client {
	if client == nil {
		client = http.DefaultClient
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func isRedirect(status int) bool {
	return status == http.StatusFound || status == http.StatusSeeOther
}

// refusedByRedirect delivers an error redirect to the callback and reports
// the error it carried.
func refusedByRedirect(c *http.Client, resp *http.Response) error {
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("the issuer's redirect has no usable Location: %w", err)
	}
	q := loc.Query()
	refusal := fmt.Errorf("the issuer refused the authorization request: %s: %s", q.Get("error"), q.Get("error_description"))
	if err := visitCallback(c, loc); err != nil {
		return errors.Join(refusal, err)
	}
	return refusal
}

// visitCallback opens the client's redirect URI. The callback answers 200
// when it accepted what the issuer sent.
func visitCallback(c *http.Client, loc *url.URL) error {
	ip := net.ParseIP(loc.Hostname())
	if loc.Scheme != "http" || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to follow the issuer's redirect to %s: not a loopback callback", loc.Redacted())
	}
	resp, err := c.Get(loc.String())
	if err != nil {
		return fmt.Errorf("open the login callback: %w", err)
	}
	doc, err := readPage(resp)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the login callback answered %s: %s", resp.Status, strings.TrimSpace(textOf(doc)))
	}
	return nil
}

func readPage(resp *http.Response) (*html.Node, error) {
	defer resp.Body.Close()
	doc, err := html.Parse(io.LimitReader(resp.Body, maxPage))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", resp.Request.URL.Redacted(), err)
	}
	return doc, nil
}

// firstForm returns the absolute action and the named, non-button fields of
// the page's first form, with their values, as a browser would submit them.
func firstForm(doc *html.Node, base *url.URL) (string, url.Values, error) {
	form := find(doc, func(n *html.Node) bool { return n.Data == "form" })
	if form == nil {
		return "", nil, fmt.Errorf("the page at %s has no form: %s", base.Redacted(), errorText(doc))
	}
	action, err := base.Parse(attr(form, "action"))
	if err != nil {
		return "", nil, fmt.Errorf("the form's action: %w", err)
	}
	fields := url.Values{}
	for n := range form.Descendants() {
		if n.Type != html.ElementNode || n.Data != "input" || attr(n, "name") == "" {
			continue
		}
		switch attr(n, "type") {
		case "submit", "button", "image", "reset":
			continue
		}
		fields.Set(attr(n, "name"), attr(n, "value"))
	}
	return action.String(), fields, nil
}

// errorText is the text of the page's element with class "error", or of the
// whole page when it has none.
func errorText(doc *html.Node) string {
	n := find(doc, func(n *html.Node) bool { return strings.Contains(" "+attr(n, "class")+" ", " error ") })
	if n == nil {
		n = doc
	}
	return strings.Join(strings.Fields(textOf(n)), " ")
}

func find(root *html.Node, match func(*html.Node) bool) *html.Node {
	for n := range root.Descendants() {
		if n.Type == html.ElementNode && match(n) {
			return n
		}
	}
	return nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func textOf(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode && (d.Parent == nil || (d.Parent.Data != "style" && d.Parent.Data != "script")) {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}
