package daemon

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/secret"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/oidc"
)

// ssoSet builds the single sign-on providers of cfg: nil when it has none.
// A provider's secret or CA file that cannot be read fails it, so that a
// reload with such a mistake keeps the configuration in force. The
// providers are not contacted here: each is discovered at its first use.
func (d *daemon) ssoSet(cfg *config.Config) (*oidc.Set, error) {
	if len(cfg.Auth.OIDC) == 0 {
		return nil, nil
	}
	key, err := sealingKey(d.state, cfg, ssoFlowName)
	if err != nil {
		return nil, fmt.Errorf("auth.oidc: the key of the sign-in flows: %w", err)
	}
	var providers []oidc.Provider
	for i, p := range cfg.Auth.OIDC {
		path := fmt.Sprintf("auth.oidc[%d] (%s)", i, p.Name)
		secret, err := readSecret(p.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s.client_secret_file: %w", path, err)
		}
		var roots *x509.CertPool
		if p.CAFile != "" {
			pem, err := os.ReadFile(p.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%s.ca_file: %w", path, err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", path, p.CAFile)
			}
		}
		providers = append(providers, oidc.Provider{Name: p.Name, Title: p.Title, Issuer: p.Issuer, ClientID: p.ClientID,
			ClientSecret: secret, RootCAs: roots, Scopes: p.Scopes, UserClaim: p.UserClaim, GroupsClaim: p.GroupsClaim,
			EmailDomains: p.EmailDomains})
	}
	return oidc.New(oidc.Config{Providers: providers, RedirectURL: "https://" + cfg.Listen.ServerName + "/sso/callback",
		Key: key, DB: d.state, Logger: d.log.Named("sso")})
}

// readSecret reads a secret (internal/secret), without the white space
// around it.
func readSecret(path string) (string, error) {
	data, err := secret.Read(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

// The store's place for the keys that seal what the bastion hands a
// browser to bring back: single sign-on flows' cookies, passkey sign-ins.
const (
	keysBucket          = "keys"
	ssoFlowName         = "sso-flow"
	passkeyCeremonyName = "passkey-ceremony"
)

// sealingKey is the key called name: made once and kept in the state store,
// so that every instance of a cluster (and the next process of an
// upgrade) opens what the others sealed. In a cluster's database it is
// sealed with store.postgres.seal_key.
func sealingKey(db store.DB, cfg *config.Config, name string) ([]byte, error) {
	var sealer *seal.Key
	if cfg.Store.Backend == config.StorePostgres && cfg.Store.Postgres != nil && cfg.Store.Postgres.SealKey != "" {
		k, err := seal.Load(cfg.Store.Postgres.SealKey)
		if err != nil {
			return nil, err
		}
		sealer = k
	}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	var key []byte
	err := db.Update(func(tx store.Tx) error {
		key = nil
		b := tx.Bucket(keysBucket)
		v, err := b.Get([]byte(name))
		if err != nil {
			return err
		}
		if v == nil {
			key = fresh
			if sealer != nil {
				return b.Put([]byte(name), sealer.Seal(name, fresh))
			}
			return b.Put([]byte(name), fresh)
		}
		if sealer != nil {
			key, err = sealer.Open(name, v)
			return err
		}
		key = append([]byte{}, v...)
		return nil
	})
	if err == nil && len(key) != 32 {
		err = errors.New("the stored key is not 32 bytes")
	}
	return key, err
}

// ssoEgress are the addresses and ports of the single sign-on providers'
// issuers, for the egress chain (invariant 13): the daemon fetches their
// discovery documents, keys and tokens. Names are resolved now, as a
// syslog collector's are. Endpoints a provider puts on other hosts than
// its issuer's need firewall.egress_allow.
func ssoEgress(cfg *config.Config, log *zap.Logger) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range cfg.Auth.OIDC {
		u, err := url.Parse(p.Issuer)
		if err != nil {
			continue
		}
		port := uint16(443)
		if s := u.Port(); s != "" {
			n, err := strconv.ParseUint(s, 10, 16)
			if err != nil {
				continue
			}
			port = uint16(n)
		}
		for _, a := range resolveEgress(u.Hostname(), log, "single sign-on provider "+p.Name) {
			out = append(out, netip.AddrPortFrom(a, port))
		}
	}
	return out
}

// resolveEgress is host's addresses: itself if it is one, else what it
// resolves to now; what is not found is logged.
func resolveEgress(host string, log *zap.Logger, what string) []netip.Addr {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.WithZone("")}
	}
	addrs, err := lookupHost(host)
	if err != nil || len(addrs) == 0 {
		log.Warn("cannot resolve a name the egress chain needs; the daemon cannot reach it", zap.String("what", what),
			zap.String("host", host), zap.Error(err))
		return nil
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap().WithZone("")
	}
	return addrs
}

// lookupHost resolves host with a time limit.
var lookupHost = func(host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
