package main

import (
	"context"

	"github.com/urfave/cli/v2"

	"github.com/labfed/labfed/broker/client"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

type keyJSON struct {
	KID       string  `json:"kid"`
	Issuer    string  `json:"issuer"`
	Status    string  `json:"status"`
	NotBefore string  `json:"not_before"`
	NotAfter  *string `json:"not_after"`
	Reason    string  `json:"reason,omitempty"`
}

func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "the federation's capability signing keys (its trust bundle)",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list every broker's signing keys: active ones sign, retiring ones still verify",
				Flags: []cli.Flag{jsonFlag(), staleFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Directory.ListKeys(ctx, &pb.ListKeysRequest{Read: readOpts(c)})
					if err != nil {
						return err
					}
					return printKeyList(c, resp.GetKeys())
				}),
			},
			{
				Name:  "rotate",
				Usage: "give the broker at --addr a new signing key (its site's administrators, coordinators)",
				Description: "The broker publishes the new key and signs with it only once the directory has\n" +
					"committed it. The old key turns retiring: it verifies the tokens it signed until\n" +
					"they have all expired (at most 12h), then leaves the bundle. Prints the new key\n" +
					"and the old one.",
				Flags: []cli.Flag{jsonFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Directory.RotateKey(ctx, &pb.RotateKeyRequest{})
					if err != nil {
						return err
					}
					keys := []*pb.SigningKey{resp.GetKey()}
					all, err := cl.Directory.ListKeys(ctx, &pb.ListKeysRequest{})
					if err != nil {
						return err
					}
					for _, k := range all.GetKeys() {
						if k.GetKid() == resp.GetOldKid() {
							keys = append(keys, k)
						}
					}
					return printKeyList(c, keys)
				}),
			},
			{
				Name:      "revoke",
				Usage:     "take a signing key out of the trust bundle at once (coordinators)",
				ArgsUsage: "KID",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "reason", Usage: "why, for the record"}, jsonFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					kid, err := oneArg(c, "KID")
					if err != nil {
						return err
					}
					k, err := cl.Directory.RevokeKey(ctx, &pb.RevokeKeyRequest{Kid: kid, Reason: c.String("reason")})
					if err != nil {
						return err
					}
					return printKeyList(c, []*pb.SigningKey{k})
				}),
			},
		},
	}
}

func printKeyList(c *cli.Context, keys []*pb.SigningKey) error {
	out := []keyJSON{}
	var rows [][]string
	for _, k := range keys {
		j := keyJSON{KID: k.GetKid(), Issuer: k.GetIssuer(), Status: k.GetStatus(), NotBefore: tstr(k.GetNotBefore()), NotAfter: tptr(k.GetNotAfter()), Reason: k.GetReason()}
		out = append(out, j)
		na := "-"
		if j.NotAfter != nil {
			na = *j.NotAfter
		}
		rows = append(rows, []string{j.KID, j.Issuer, j.Status, j.NotBefore, na})
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	return table(c.App.Writer, []string{"KID", "ISSUER", "STATUS", "NOT BEFORE", "NOT AFTER"}, rows)
}
