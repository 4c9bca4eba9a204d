package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
)

func TestIdentityValidate(t *testing.T) {
	tests := []struct {
		name    string
		id      Identity
		wantErr string // substring; "" means valid
	}{
		{"broker", Identity{"rutgers", KindBroker, "rutgers-1"}, ""},
		{"agent", Identity{"psc", KindAgent, "bridges2"}, ""},
		{"admin", Identity{"fabric-dc", KindAdmin, "alice"}, ""},
		{"one letter", Identity{"a", KindBroker, "b"}, ""},
		{"63 characters", Identity{"a" + strings.Repeat("b", 62), KindBroker, "n"}, ""},
		{"64 characters", Identity{"a" + strings.Repeat("b", 63), KindBroker, "n"}, "site name"},
		{"empty site", Identity{"", KindBroker, "n"}, "site name is empty"},
		{"empty name", Identity{"s", KindBroker, ""}, "broker name is empty"},
		{"upper case", Identity{"Rutgers", KindBroker, "n"}, "not valid"},
		{"leading digit", Identity{"1site", KindBroker, "n"}, "not valid"},
		{"leading dash", Identity{"s", KindBroker, "-n"}, "not valid"},
		{"slash", Identity{"s", KindBroker, "a/b"}, "not valid"},
		{"dot", Identity{"s.edu", KindBroker, "n"}, "not valid"},
		{"underscore", Identity{"s", KindAgent, "a_b"}, "not valid"},
		{"unknown kind", Identity{"s", "user", "n"}, "kind"},
		{"empty kind", Identity{"s", "", "n"}, "kind"},
		{"kind upper case", Identity{"s", "Broker", "n"}, "kind"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			err := test.id.Validate()
			switch {
			case test.wantErr == "" && err != nil:
				t.Errorf("%#v.Validate() = %v, want nil", test.id, err)
			case test.wantErr != "" && (err == nil || !strings.Contains(err.Error(), test.wantErr)):
				t.Errorf("%#v.Validate() = %v, want error containing %q", test.id, err, test.wantErr)
			}
		})
	}
}

func TestIdentityURIRoundTrip(t *testing.T) {
	id := Identity{"rutgers", KindBroker, "rutgers-1"}
	if got, want := id.URI().String(), "spiffe://labfed/site/rutgers/broker/rutgers-1"; got != want {
		t.Errorf("URI() = %q, want %q", got, want)
	}
	if got, want := id.String(), "rutgers/broker/rutgers-1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	u, err := url.Parse(id.URI().String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseIdentity(u)
	if err != nil || got != id {
		t.Errorf("ParseIdentity(%v) = %v, %v; want %v", u, got, err, id)
	}
}

func TestParseIdentityRejects(t *testing.T) {
	tests := []struct{ name, uri string }{
		{"scheme", "https://labfed/site/s/broker/n"},
		{"trust domain", "spiffe://other/site/s/broker/n"},
		{"port", "spiffe://labfed:1/site/s/broker/n"},
		{"user", "spiffe://u@labfed/site/s/broker/n"},
		{"query", "spiffe://labfed/site/s/broker/n?x=1"},
		{"fragment", "spiffe://labfed/site/s/broker/n#f"},
		{"short path", "spiffe://labfed/site/s/broker"},
		{"long path", "spiffe://labfed/site/s/broker/n/x"},
		{"trailing slash", "spiffe://labfed/site/s/broker/n/"},
		{"not site", "spiffe://labfed/org/s/broker/n"},
		{"escaped", "spiffe://labfed/site/%73/broker/n"},
		{"escaped slash", "spiffe://labfed/site/a%2Fb/broker/n"},
		{"bad kind", "spiffe://labfed/site/s/root/n"},
		{"bad name", "spiffe://labfed/site/s/broker/N"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			u, err := url.Parse(test.uri)
			if err != nil {
				t.Fatal(err)
			}
			if id, err := ParseIdentity(u); err == nil {
				t.Errorf("ParseIdentity(%q) = %v, nil; want error", test.uri, id)
			}
		})
	}
}

func TestIdentityFromCert(t *testing.T) {
	good := Identity{"s", KindAgent, "a"}.URI()
	other := Identity{"s", KindBroker, "b"}.URI()
	tests := []struct {
		name    string
		uris    []*url.URL
		wantErr string
	}{
		{"one", []*url.URL{good}, ""},
		{"none", nil, "no URI SAN"},
		{"two", []*url.URL{good, other}, "2 URI SANs"},
		{"malformed", []*url.URL{{Scheme: "spiffe", Host: "labfed", Path: "/site/s"}}, "not a labfed identity"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			c := &x509.Certificate{Subject: pkix.Name{CommonName: "c"}, URIs: test.uris}
			id, err := IdentityFromCert(c)
			switch {
			case test.wantErr == "" && (err != nil || id != (Identity{"s", KindAgent, "a"})):
				t.Errorf("IdentityFromCert = %v, %v; want s/agent/a, nil", id, err)
			case test.wantErr != "" && (err == nil || !strings.Contains(err.Error(), test.wantErr)):
				t.Errorf("IdentityFromCert = %v, %v; want error containing %q", id, err, test.wantErr)
			}
		})
	}
}
