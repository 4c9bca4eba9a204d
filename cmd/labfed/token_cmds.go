package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/trust"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "capability tokens: issue, inspect, verify",
		Subcommands: []*cli.Command{
			{
				Name:  "issue",
				Usage: "ask your broker for a capability token; prints the compact token and nothing else",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "scope", Required: true, Usage: "`ACTION:RESOURCE`, e.g. instrument.operate:rutgers/krios-g4"},
					&cli.StringFlag{Name: "user", Usage: "issue for `USER` (administrators of the resource's site, coordinators)"},
					&cli.StringFlag{Name: "ttl", Usage: "lifetime, such as 30m (default 15m, at most 12h, never past the grant)"},
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := pb.NewTokenServiceClient(cl.Conn()).Issue(ctx, &pb.IssueTokenRequest{Scope: c.String("scope"), User: c.String("user"), Ttl: c.String("ttl")})
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, resp.GetToken())
					return err
				}),
			},
			{
				Name:  "revoke",
				Usage: "revoke one token (--jti), every token of a user (--user) or a signing key (--key); verifiers refuse them within seconds",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "jti", Usage: "the token `ID` (labfed token inspect shows it)"},
					&cli.StringFlag{Name: "user", Usage: "every token of `USER` issued until now"},
					&cli.StringFlag{Name: "key", Usage: "the signing key `KID`"},
					&cli.StringFlag{Name: "reason", Usage: "why, for the record"},
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := pb.NewTokenServiceClient(cl.Conn()).Revoke(ctx, &pb.RevokeTokensRequest{Jti: c.String("jti"), User: c.String("user"), Key: c.String("key"), Reason: c.String("reason")})
					if err != nil {
						return err
					}
					if l := resp.GetLock(); l != nil {
						_, err = fmt.Fprintf(c.App.Writer, "lock %s on %s %s until %s\n", l.GetId(), l.GetKind(), l.GetValue(), tstr(l.GetUntil()))
					} else {
						_, err = fmt.Fprintf(c.App.Writer, "key %s revoked\n", c.String("key"))
					}
					return err
				}),
			},
			{
				Name:      "inspect",
				Usage:     "show a token's header and claims without trusting them",
				ArgsUsage: "TOKEN",
				Flags:     []cli.Flag{jsonFlag()},
				Action: func(c *cli.Context) error {
					tok, err := oneArg(c, "TOKEN")
					if err != nil {
						return err
					}
					header, claims, err := inspectToken(tok)
					if err != nil {
						return err
					}
					return printJSON(c.App.Writer, map[string]any{"header": header, "claims": claims, "verified": false})
				},
			},
			{
				Name:      "verify",
				Usage:     "verify a token as the audience site's agent would: offline, against the federation's trust bundle and revocation locks",
				ArgsUsage: "TOKEN",
				Description: "Fetches the trust bundle and the locks from the broker once, or with --offline reads\n" +
					"them from --cache alone (as an agent cut off from its broker would: it then refuses\n" +
					"tokens that operate or modify, since a revocation may have been missed, and still\n" +
					"accepts view tokens). Exit status 0 only when the token is valid.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "aud", Required: true, Usage: "the verifying `SITE`"},
					&cli.StringFlag{Name: "scope", Usage: "require a scope covering `ACTION:RESOURCE`"},
					&cli.StringFlag{Name: "cache", Usage: "keep the trust state in `FILE` (mode 0600) for later --offline use"},
					&cli.BoolFlag{Name: "offline", Usage: "do not contact the broker; verify against --cache"},
					jsonFlag(),
				},
				Action: verifyToken,
			},
		},
	}
}

func verifyToken(c *cli.Context) error {
	tok, err := oneArg(c, "TOKEN")
	if err != nil {
		return err
	}
	var want *capability.Scope
	if s := c.String("scope"); s != "" {
		sc, err := capability.ParseScope(s)
		if err != nil {
			return err
		}
		want = &sc
	}
	if c.Bool("offline") && c.String("cache") == "" {
		return errors.New("--offline verifies against a trust cache; give --cache FILE (written by an earlier verify with --cache)")
	}
	var store *trust.Store
	if c.Bool("offline") {
		store, err = trust.Open(trust.Options{Site: c.String("aud"), Source: offlineSource{}, CacheFile: c.String("cache")})
		if err != nil {
			return err
		}
	} else {
		cl, ctx, done, err := dial(c)
		if err != nil {
			return err
		}
		defer done()
		store, err = trust.Open(trust.Options{Site: c.String("aud"), Source: cl.TrustSource(), CacheFile: c.String("cache")})
		if err != nil {
			return err
		}
		if err := store.Refresh(ctx); err != nil {
			return err
		}
	}
	_, verr := store.Verify(tok, want)
	out := map[string]any{"valid": verr == nil}
	if verr != nil {
		var re *capability.RefusedError
		if errors.As(verr, &re) {
			out["reason"] = re.Reason
			out["code"] = re.Code
		} else {
			out["reason"] = verr.Error()
		}
	} else if _, claims, err := inspectToken(tok); err == nil {
		out["claims"] = claims
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, out); err != nil {
			return err
		}
	} else if verr == nil {
		fmt.Fprintln(c.App.Writer, "valid")
	}
	return verr
}

// offlineSource is the broker of a verifier told not to contact it.
type offlineSource struct{}

var errOffline = errors.New("--offline: not contacting the broker")

func (offlineSource) Watch(context.Context, func(*trust.State)) error { return errOffline }
func (offlineSource) Fetch(context.Context) (*trust.State, error)     { return nil, errOffline }

// inspectToken decodes a compact JWS's header and claims without
// verifying anything.
func inspectToken(tok string) (header, claims map[string]any, err error) {
	if len(tok) > capability.MaxTokenSize {
		return nil, nil, fmt.Errorf("the token is larger than %d bytes; not a capability token", capability.MaxTokenSize)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil, errors.New("not a compact JWS: want HEADER.CLAIMS.SIGNATURE")
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, nil, fmt.Errorf("segment %d is not base64url: %v", i+1, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			return nil, nil, fmt.Errorf("segment %d is not a JSON object: %v", i+1, err)
		}
	}
	return header, claims, nil
}
