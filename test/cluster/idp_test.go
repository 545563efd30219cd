package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/bastiond/bastiond/test/e2e"
)

// TestLabIdP: both instances reach the lab's OpenID provider on the public
// side, through the balancer, by its name over IPv4 and IPv6: discovery and
// the signing keys, its certificate checked against the lab's CA.
func TestLabIdP(t *testing.T) {
	e2e.NeedLab(t)
	p := e2e.LabIdP(t)
	for _, host := range []string{"bastion", "bastion2"} {
		for _, network := range []string{"tcp4", "tcp6"} {
			t.Run(host+"/"+network, func(t *testing.T) {
				c := e2e.LabHTTPClient(t, host, network, p.CertPool(t))
				ctx, cancel := context.WithTimeout(oidc.ClientContext(context.Background(), c), 30*time.Second)
				defer cancel()
				prov, err := oidc.NewProvider(ctx, p.Issuer)
				if err != nil {
					t.Fatalf("discovery of %s from %s over %s: %v", p.Issuer, host, network, err)
				}
				var meta struct {
					JWKS string `json:"jwks_uri"`
				}
				if err := prov.Claims(&meta); err != nil {
					t.Fatal(err)
				}
				resp, err := c.Get(meta.JWKS)
				if err != nil {
					t.Fatalf("keys from %s over %s: %v", host, network, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("keys: %s", resp.Status)
				}
			})
		}
	}
}
