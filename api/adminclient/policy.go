package adminclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bastiond/bastiond/api/admin"
)

// Policy fetches the policy in force and its differences from the kernel.
func (c *Client) Policy(ctx context.Context) (admin.PolicyView, error) {
	var v admin.PolicyView
	return v, c.do(ctx, http.MethodGet, "/v1/policy", &v)
}

// Counters fetches the firewall's per-target counters.
func (c *Client) Counters(ctx context.Context) (admin.CountersView, error) {
	var v admin.CountersView
	return v, c.do(ctx, http.MethodGet, "/v1/policy/counters", &v)
}

// Export fetches the nft script for target's own firewall.
func (c *Client) Export(ctx context.Context, target string) (string, error) {
	var v admin.PolicyView
	err := c.do(ctx, http.MethodGet, "/v1/policy/export?target="+url.QueryEscape(target), &v)
	return v.Text, err
}

// Blocklist lists the blocklisted sources.
func (c *Client) Blocklist(ctx context.Context) ([]admin.BlockEntry, error) {
	var list []admin.BlockEntry
	return list, c.do(ctx, http.MethodGet, "/v1/policy/blocklist", &list)
}

// Unblock removes the sources that overlap addrs (addresses or prefixes;
// an IPv6 address clears its /64), or every entry when all is set, and
// returns how many sources it removed.
func (c *Client) Unblock(ctx context.Context, addrs []string, all bool) (int, error) {
	q := url.Values{"addr": addrs}
	if all {
		q.Set("all", "true")
	}
	var res map[string]int
	err := c.do(ctx, http.MethodDelete, "/v1/policy/blocklist?"+q.Encode(), &res)
	return res["removed"], err
}

// Discover lists the hosts on the VNet that are not in the inventory.
func (c *Client) Discover(ctx context.Context) (admin.Discovery, error) {
	var v admin.Discovery
	return v, c.do(ctx, http.MethodGet, "/v1/targets/discover", &v)
}
