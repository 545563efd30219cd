package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/version"
)

// The daemon's own audit events: start and stop, reloads, upgrades and
// firewall repairs. An action an admin asked for on the admin socket names
// them (adminapi.Caller); one the daemon takes on a signal or by itself
// names bastiond, and says which signal in Detail.

// event records e as the daemon's: actor bastiond unless set, source local.
func (d *daemon) event(e audit.Event) {
	if e.Actor == "" {
		e.Actor = audit.ActorDaemon
	}
	e.Source = audit.SourceLocal
	d.trail.Audit(e)
}

// actorOf is the admin who sent the request of ctx, or bastiond.
func actorOf(ctx context.Context) string {
	if a, ok := adminapi.Caller(ctx); ok {
		return a
	}
	return audit.ActorDaemon
}

func (d *daemon) auditStarted() {
	detail := fmt.Sprintf("pid %d, configuration %s", os.Getpid(), d.file)
	if d.pred != nil {
		detail += fmt.Sprintf("; took over from pid %d (version %s) in an upgrade", d.pred.hello.PID, d.pred.hello.Version)
	}
	d.event(audit.Event{Event: audit.DaemonStarted, Version: version.Version, Digest: d.config().Digest, Detail: detail})
}

// auditStopped is written before the broker closes the trail: the ends of
// the sessions it then closes are the only lines after it.
func (d *daemon) auditStopped(reason, detail string) {
	d.event(audit.Event{Event: audit.DaemonStopped, Version: version.Version, Reason: reason, Detail: detail})
}

// maxDifferences bounds the differences a drift event lists.
const maxDifferences = 20

func (d *daemon) auditDrift(diffs []string) {
	shown := diffs[:min(len(diffs), maxDifferences)]
	detail := "someone changed bastiond's tables; restored them: " + strings.Join(shown, "; ")
	if len(diffs) > len(shown) {
		detail += fmt.Sprintf("; and %d more", len(diffs)-len(shown))
	}
	d.event(audit.Event{Event: audit.DriftRepaired, Count: int64(len(diffs)), Detail: detail})
}

// reloadError is why a reload was refused: Reason is its class in the
// audit trail.
type reloadError struct {
	reason string
	err    error
}

func (e *reloadError) Error() string { return e.err.Error() }
func (e *reloadError) Unwrap() error { return e.err }

func refused(reason string, err error) error { return &reloadError{reason: reason, err: err} }

// auditReload records a reload's outcome. next is the configuration
// swapped in (nil when refused), prev the one before.
func (d *daemon) auditReload(actor, how string, prev, next *config.Config, err error) {
	if err == nil {
		detail := how + "; changed: " + strings.Join(orNone(configChanges(prev, next)), ", ")
		if keys := restartOnly(prev, next); len(keys) > 0 {
			detail += "; at the next restart only: " + strings.Join(keys, ", ")
		}
		d.event(audit.Event{Event: audit.ConfigReloaded, Actor: actor, Digest: next.Digest, Detail: detail})
		return
	}
	reason := "not_applied"
	var re *reloadError
	if errors.As(err, &re) {
		reason = re.reason
	}
	d.event(audit.Event{Event: audit.ConfigRefused, Actor: actor, Digest: fileDigest(d.file), Reason: reason,
		Detail: how + "; the running configuration stays in force: " + strings.ReplaceAll(err.Error(), "\n", "; ")})
}

// fileDigest is the SHA-256 of the file as it is now, "" if unreadable:
// the digest a refused configuration would have had.
func fileDigest(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"nothing"}
	}
	return s
}

// configChanges lists the settings that differ between a and b, as
// section.key (state_dir at the top level).
func configChanges(a, b *config.Config) []string {
	var out []string
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	t := va.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fa, fb := va.Field(i), vb.Field(i)
		if f.Type.Kind() != reflect.Struct {
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				out = append(out, name)
			}
			continue
		}
		for j := range f.Type.NumField() {
			sf := f.Type.Field(j)
			sub, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if sub == "" || sub == "-" || !sf.IsExported() {
				continue
			}
			if !reflect.DeepEqual(fa.Field(j).Interface(), fb.Field(j).Interface()) {
				out = append(out, name+"."+sub)
			}
		}
	}
	return out
}

type reloadRequest struct {
	actor  string
	result chan<- reloadOutcome
}

type reloadOutcome struct {
	res adminapi.ReloadResult
	err error
}

// errBusy answers a reload asked for during an upgrade or a drain.
var errBusy = errors.New("not reloaded: an upgrade or a stop is under way; try again when it is over")

// serveReload answers a reload request, in the main loop.
func (d *daemon) serveReload(req reloadRequest) {
	if d.isUpgrading() {
		req.result <- reloadOutcome{err: errBusy}
		return
	}
	req.result <- reloadOutcome{res: d.reload(req.actor, "bastionctl reload")}
}

// requestReload is the admin API's `bastionctl reload`: the main loop
// reloads, as on SIGHUP, and the outcome is the answer.
func (d *daemon) requestReload(ctx context.Context) (adminapi.ReloadResult, error) {
	d.mu.Lock()
	draining := d.draining
	d.mu.Unlock()
	if draining {
		return adminapi.ReloadResult{}, errBusy
	}
	res := make(chan reloadOutcome, 1)
	select {
	case d.reloads <- reloadRequest{actor: actorOf(ctx), result: res}:
	case <-ctx.Done():
		return adminapi.ReloadResult{}, ctx.Err()
	}
	select {
	case r := <-res:
		return r.res, r.err
	case <-ctx.Done():
		return adminapi.ReloadResult{}, ctx.Err()
	}
}
