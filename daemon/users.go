package daemon

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
)

// openState opens the state store (see openStore) and the accounts in it.
func openState(cfg *config.Config, log *zap.Logger, trail audit.Sink) (stateStore, *auth.Authenticator, error) {
	db, err := openStore(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	store, err := auth.NewStore(db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	// The passkey sign-ins one instance begins, another may finish.
	ceremonies, err := sealingKey(db, cfg, passkeyCeremonyName)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("the key of passkey sign-ins: %w", err)
	}
	// In a cluster the instances count failed sign-ins together; a single
	// host counts them in memory.
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: store, Logger: log.Named("auth"), Audit: trail,
		Throttle: auth.ThrottleConfig{MaxEntries: cfg.Limits.SigninThrottleEntries}, SharedThrottle: clustered(db),
		CeremonyKey: ceremonies})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	if err := store.PruneTokens(); err != nil {
		log.Warn("cannot prune expired API tokens", zap.Error(err))
	}
	return db, a, nil
}

// accessPolicy builds the authorization policy of cfg.
func accessPolicy(cfg *config.Config) *access.Policy {
	targets := make([]access.Target, len(cfg.Inventory.Targets))
	for i, t := range cfg.Inventory.Targets {
		targets[i] = access.Target{Name: t.Name, Description: t.Description, Tags: t.Tags, SSH: t.Ports.SSH, RDP: t.Ports.RDP, Tunnel: t.Ports.TunnelPorts(),
			SSHCertificates: t.SSHCertificates}
	}
	roles := make([]access.Role, len(cfg.Access.Roles))
	for i, r := range cfg.Access.Roles {
		roles[i] = access.Role{Name: r.Name, Subjects: r.Subjects, Targets: r.Targets, Protocols: r.Protocols, Logins: r.Logins,
			Bastions: r.Bastions, DisableClipboard: r.DisableClipboard, DisableFileTransfer: r.DisableFileTransfer, Record: r.Record, Auditor: r.Auditor}
	}
	networks := make([]access.Network, len(cfg.Inventory.Networks))
	for i, n := range cfg.Inventory.Networks {
		networks[i] = access.Network{Name: n.Name, Description: n.Description, Prefixes: n.CIDRs, Tags: n.Tags, SSH: n.Ports.SSH, RDP: n.Ports.RDP,
			Tunnel: n.Ports.TunnelPorts(), TargetName: n.TargetName, SSHCertificates: n.SSHCertificates}
	}
	return access.New(cfg.Listen.ServerName, targets, cfg.Access.Groups, roles).WithNetworks(networks)
}

// usersAPI is account administration for the admin API.
type usersAPI struct{ d *daemon }

var _ adminapi.Users = usersAPI{}

func (u usersAPI) store() *auth.Store { return u.d.auth.Store() }

// notFound maps the store's "no such" errors to the admin API's.
func notFound(err error) error {
	if errors.Is(err, auth.ErrNoUser) || errors.Is(err, auth.ErrNoToken) {
		return fmt.Errorf("%w: %s", adminapi.ErrNotFound, strings.TrimPrefix(err.Error(), "auth: "))
	}
	return err
}

func (u usersAPI) List() ([]adminapi.UserInfo, error) {
	users, err := u.store().Users()
	if err != nil {
		return nil, err
	}
	tokens, err := u.store().Tokens("")
	if err != nil {
		return nil, err
	}
	policy := accessPolicy(u.d.config())
	out := make([]adminapi.UserInfo, 0, len(users))
	for _, us := range users {
		n := 0
		for _, t := range tokens {
			if t.User == us.Name && time.Now().Before(t.Expires) {
				n++
			}
		}
		roles := policy.RolesOf(access.Principal{User: us.Name, Granted: us.Roles, Groups: us.Subjects()})
		if roles == nil {
			roles = []string{}
		}
		out = append(out, adminapi.UserInfo{
			Name: us.Name, Disabled: us.Disabled, TOTP: us.HasTOTP(), Granted: us.Roles, Roles: roles,
			LockedUntil: us.LockedUntil, LockedBy: us.LockedBy, Created: us.Created, PasswordChanged: us.PasswordChanged, Tokens: n,
			Provider: us.Provider, Groups: us.Groups, LastSignIn: us.LastSignIn,
		})
	}
	return out, nil
}

// checkRoles refuses role names the configuration does not define.
func (u usersAPI) checkRoles(roles []string) error {
	known := accessPolicy(u.d.config()).RoleNames()
	for _, r := range roles {
		if !slices.Contains(known, r) {
			return fmt.Errorf("no role %q in access.roles (defined: %s)", r, strings.Join(known, ", "))
		}
	}
	return nil
}

func (u usersAPI) Add(name, password string, roles []string) error {
	if err := u.checkRoles(roles); err != nil {
		return err
	}
	return u.store().AddUser(name, password, roles)
}

// SetPassword also ends the user's web sessions and revokes their tokens:
// a password is changed because it may be known to someone else.
func (u usersAPI) SetPassword(name, password string) error {
	if err := u.store().SetPassword(name, password); err != nil {
		return notFound(err)
	}
	u.endAccess(name)
	return nil
}

func (u usersAPI) endAccess(name string) {
	n, err := u.d.front.EndUser(name)
	if err != nil {
		u.d.log.Error("cannot end the user's web sessions", zap.String("user", name), zap.Error(err))
	}
	t, _ := u.store().RevokeTokens(name)
	s := u.d.revoke("password changed")
	u.d.log.Info("ended the user's web sessions and tokens", zap.String("user", name), zap.Int("web_sessions", n), zap.Int("tokens", t), zap.Int("sessions", s))
}

// Disable revokes the account's tokens after disabling it: IssueToken
// refuses a disabled account, so none is made in between, and enabling it
// again brings back no token made before.
func (u usersAPI) Disable(name string) (adminapi.Ended, error) {
	if err := u.store().SetDisabled(name, true); err != nil {
		return adminapi.Ended{}, notFound(err)
	}
	var e adminapi.Ended
	var err, webErr error
	e.WebSessions, webErr = u.d.front.EndUser(name)
	e.Tokens, err = u.store().RevokeTokens(name)
	e.Sessions = u.d.revoke("account disabled")
	if err != nil {
		return e, fmt.Errorf("account %s disabled, but its API tokens could not be revoked: %w", name, err)
	}
	if webErr != nil {
		return e, fmt.Errorf("account %s disabled, but its web sessions could not be ended (each is refused at its next request): %w", name, webErr)
	}
	u.d.log.Info("account disabled", zap.String("user", name), zap.Int("web_sessions", e.WebSessions), zap.Int("tokens", e.Tokens),
		zap.Int("sessions", e.Sessions))
	return e, nil
}

func (u usersAPI) Enable(name string) error { return notFound(u.store().SetDisabled(name, false)) }

func (u usersAPI) Unlock(name string) error { return notFound(u.d.auth.Unlock(name)) }

func (u usersAPI) Grant(name string, roles []string) error {
	if len(roles) == 0 {
		return errors.New("name one or more roles")
	}
	if err := u.checkRoles(roles); err != nil {
		return err
	}
	return notFound(u.store().Grant(name, roles...))
}

func (u usersAPI) Revoke(name string, roles []string) error {
	if len(roles) == 0 {
		return errors.New("name one or more roles")
	}
	if err := u.store().Revoke(name, roles...); err != nil {
		return notFound(err)
	}
	u.d.revoke("role revoked")
	return nil
}

func (u usersAPI) Delete(name string) error {
	if err := u.store().DeleteUser(name); err != nil {
		return notFound(err)
	}
	_, err := u.d.front.EndUser(name)
	u.d.revoke("account deleted")
	if err != nil {
		return fmt.Errorf("account %s deleted, but its web sessions could not be ended (each is refused at its next request): %w", name, err)
	}
	return nil
}

func (u usersAPI) BeginTOTP(name string) (adminapi.TOTPEnrolment, error) {
	e, err := u.store().BeginTOTP(name, u.d.config().Listen.ServerName)
	if err != nil {
		return adminapi.TOTPEnrolment{}, notFound(err)
	}
	qr, err := e.QRText()
	if err != nil {
		return adminapi.TOTPEnrolment{}, err
	}
	return adminapi.TOTPEnrolment{URI: e.URI, Secret: e.Secret, QR: qr}, nil
}

func (u usersAPI) ConfirmTOTP(name, code string) error {
	return notFound(u.store().ConfirmTOTP(name, code))
}
func (u usersAPI) ResetTOTP(name string) error { return notFound(u.store().ResetTOTP(name)) }

func (u usersAPI) ResetPasskeys(name string) (int, error) {
	n, err := u.store().ResetPasskeys(name)
	return n, notFound(err)
}

func (u usersAPI) Tokens(user string) ([]adminapi.TokenInfo, error) {
	ts, err := u.store().Tokens(user)
	if err != nil {
		return nil, err
	}
	out := make([]adminapi.TokenInfo, len(ts))
	for i, t := range ts {
		out[i] = adminapi.TokenInfo{ID: t.ID, User: t.User, Scopes: t.Scopes, Comment: t.Comment, Created: t.Created, Expires: t.Expires, Source: t.Source}
	}
	return out, nil
}

// RevokeToken and RevokeTokens also end the tunnels the tokens opened.
func (u usersAPI) RevokeToken(id string) error {
	if err := u.store().RevokeToken(id, ""); err != nil {
		return notFound(err)
	}
	u.d.revoke("token revoked")
	return nil
}

func (u usersAPI) RevokeTokens(user string) (int, error) {
	if _, err := u.store().User(user); err != nil {
		return 0, notFound(err)
	}
	n, err := u.store().RevokeTokens(user)
	u.d.revoke("tokens revoked")
	return n, err
}
