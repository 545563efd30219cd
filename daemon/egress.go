package daemon

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/config"
)

// resolvConf is where the host's DNS resolvers are listed.
const resolvConf = "/etc/resolv.conf"

// egressFacts are what this host says about the configuration's egress
// settings, looked up before the policy is compiled so that compiling
// stays pure.
type egressFacts struct {
	// UID is the uid of firewall.egress_user, when UserFound.
	UID       uint32
	UserFound bool
	// Resolvers are /etc/resolv.conf's nameservers, used when the
	// configuration sets no firewall.egress_dns.
	Resolvers []netip.Addr
	// SyslogAddrs are the addresses logging.syslog's collector name
	// resolved to, when it is a name and not an address.
	SyslogAddrs []netip.Addr
	// Database are the state store's PostgreSQL servers, names resolved.
	Database []netip.AddrPort
	// IdentityProviders are the single sign-on providers' issuers, names
	// resolved.
	IdentityProviders []netip.AddrPort
}

// lookupEgressFacts looks up what the egress chain needs from this host
// (invariant 13): the uid of firewall.egress_user, the resolvers of
// /etc/resolv.conf, and the addresses of a syslog collector given by name.
// It logs what the chain will and will not restrict.
func lookupEgressFacts(cfg *config.Config, log *zap.Logger) egressFacts {
	fw := cfg.Firewall
	var f egressFacts
	if fw.RestrictEgress == config.EgressOff {
		log.Warn("egress not restricted in nftables (firewall.restrict_egress: off); only the dial guard limits what the daemon reaches")
		return f
	}
	if u, err := user.Lookup(fw.EgressUser); err == nil {
		if uid, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			f.UID, f.UserFound = uint32(uid), true
		}
	}
	switch {
	case fw.RestrictEgress == config.EgressAll:
		log.Info("egress pinned for every process of the host", zap.String("restrict_egress", fw.RestrictEgress))
	case !f.UserFound:
		log.Warn("egress NOT restricted: the user of firewall.egress_user does not exist; create it and run the daemon as it, or set restrict_egress: all",
			zap.String("egress_user", fw.EgressUser), zap.Int("daemon_uid", os.Geteuid()))
	case uint32(os.Geteuid()) != f.UID:
		log.Warn("egress pinned for firewall.egress_user, but the daemon runs as another user: its own connections are not restricted by the chain",
			zap.String("egress_user", fw.EgressUser), zap.Uint32("egress_uid", f.UID), zap.Int("daemon_uid", os.Geteuid()))
	default:
		log.Info("egress pinned for the daemon's user", zap.String("egress_user", fw.EgressUser), zap.Uint32("uid", f.UID))
	}
	if fw.EgressDNS == nil {
		f.Resolvers = readResolvers(resolvConf)
	}
	f.Database = databaseEgress(cfg, log)
	f.IdentityProviders = ssoEgress(cfg, log)
	if s := cfg.Logging.Syslog; s != nil {
		if host, _, err := net.SplitHostPort(s.Address); err == nil {
			if _, err := netip.ParseAddr(host); err != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
				cancel()
				if err != nil {
					log.Warn("cannot resolve the syslog collector; the egress chain does not let the daemon reach it",
						zap.String("address", s.Address), zap.Error(err))
				}
				f.SyslogAddrs = addrs
			}
		}
	}
	return f
}

// readResolvers returns the nameserver addresses of a resolv.conf file,
// none if it cannot be read.
func readResolvers(path string) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(fields[1]); err == nil {
			out = append(out, a.WithZone(""))
		}
	}
	return out
}
