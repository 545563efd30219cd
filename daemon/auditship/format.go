package auditship

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
)

// Severities (RFC 5424), which journald's priorities share.
const (
	sevWarning = 4
	sevNotice  = 5
)

// warnings are the event types shipped at warning severity: refusals,
// failures and losses. Every other event is a notice.
var warnings = map[string]bool{
	audit.EventsSuppressed: true, audit.EventsLost: true, audit.ShippingFailed: true,
	audit.SigninFailed: true, audit.SigninThrottled: true, audit.SigninRefused: true, audit.AccountLocked: true,
	audit.TokenRefused: true, audit.ConnectRefused: true, audit.RecordingFailed: true,
	audit.ConfigRefused: true, audit.UpgradeFailed: true, audit.DriftRepaired: true,
}

func severity(event string) int {
	if warnings[event] {
		return sevWarning
	}
	return sevNotice
}

// MessageID is the journald MESSAGE_ID of an event type: a fixed 128-bit
// id, the first half of the SHA-256 of "bastiond audit " and the type, in
// 32 hex digits. docs/audit.md lists them.
func MessageID(event string) string {
	sum := sha256.Sum256([]byte("bastiond audit " + event))
	return hex.EncodeToString(sum[:16])
}

// fieldsOf is a line's fields, decoded. A line that does not decode (it
// always does: the writer made it) yields nil.
func fieldsOf(line []byte) map[string]any {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return nil
	}
	return m
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// text is a field's value as journald shows it: strings as they are,
// lists joined with commas, everything else as JSON.
func text(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = text(p)
		}
		return strings.Join(parts, ",")
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// summary is a short human sentence for a line, for journald's MESSAGE:
// "audit: signin_failed by alice from 198.51.100.7 (bad_password)".
func summary(m map[string]any) string {
	var b strings.Builder
	b.WriteString("audit: " + orDash(str(m, "event")))
	b.WriteString(" by " + orDash(str(m, "actor")))
	b.WriteString(" from " + orDash(str(m, "source")))
	if t := str(m, "target"); t != "" {
		b.WriteString(" to " + t)
		if p := str(m, "protocol"); p != "" {
			b.WriteString(" (" + p + ")")
		}
	}
	if r := str(m, "reason"); r != "" {
		b.WriteString(": " + r)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// journalFields are the journald fields of a line, besides MESSAGE and
// PRIORITY: MESSAGE_ID, SYSLOG_IDENTIFIER, BASTIOND_AUDIT (the whole
// line), BASTIOND_HASH (the line's SHA-256, which the next line carries as
// prev), and one BASTIOND_<FIELD> per field of the line, upper-cased
// (BASTIOND_EVENT, BASTIOND_ACTOR, BASTIOND_SOURCE, BASTIOND_PREV, ...).
func journalFields(line []byte, m map[string]any, ident string) map[string]string {
	f := map[string]string{
		"MESSAGE_ID":        MessageID(str(m, "event")),
		"SYSLOG_IDENTIFIER": ident,
		"BASTIOND_AUDIT":    string(line),
		"BASTIOND_HASH":     hex.EncodeToString(hashOf(line)),
	}
	for k, v := range m {
		name := "BASTIOND_" + strings.ToUpper(k)
		if !journalName(name) {
			continue // never from our writer; a field journald would refuse
		}
		f[name] = text(v)
	}
	return f
}

// journalName reports whether s is a field name journald accepts:
// upper-case letters, digits and underscores, not starting with one, at
// most 64 characters.
func journalName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '_' || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func hashOf(line []byte) []byte {
	h := audit.HashLine(line)
	return h[:]
}

// sdID is the structured data element of every message. 32473 is the
// example Private Enterprise Number (RFC 5612), which bastiond uses for
// want of its own.
const sdID = "bastiond@32473"

// header is what a syslog message says besides its line.
type header struct {
	facility int
	hostname string // "-" when unknown
	appName  string
	procID   string
}

// message is line as one RFC 5424 syslog message:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [bastiond@32473 hash="…" prev="…" v="2"] LINE
//
// MSGID is the event type, TIMESTAMP the event's time (microseconds, UTC),
// hash the line's SHA-256, by which a collector drops the duplicates that
// a resend after a broken connection makes, and the MSG is the line itself
// (JSON, UTF-8).
func (h header) message(line []byte) []byte {
	m := fieldsOf(line)
	event := str(m, "event")
	ts := "-"
	if t, err := time.Parse(time.RFC3339Nano, str(m, "time")); err == nil {
		ts = t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s ", h.facility*8+severity(event), ts, h.hostname, h.appName, h.procID,
		token(event, 32))
	b.WriteString("[" + sdID + ` hash="` + hex.EncodeToString(hashOf(line)) + `"`)
	if p := str(m, "prev"); p != "" {
		b.WriteString(` prev="` + sdEscape(p) + `"`)
	}
	if v, ok := m["v"].(json.Number); ok {
		b.WriteString(` v="` + sdEscape(v.String()) + `"`)
	}
	b.WriteString("] ")
	b.Write(line)
	return b.Bytes()
}

// frame is msg with octet-counting framing: its length in decimal, a
// space, then msg (RFC 6587 3.4.1, RFC 5425 4.3).
func frame(dst, msg []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, ' ')
	return append(dst, msg...)
}

// token is s as a header field of RFC 5424: printable US-ASCII without
// spaces, at most n characters, "-" when empty.
func token(s string, n int) string {
	b := []byte(s)
	b = slices.DeleteFunc(b, func(c byte) bool { return c < '!' || c > '~' })
	if len(b) > n {
		b = b[:n]
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// sdEscape escapes a PARAM-VALUE: '"', '\' and ']' take a backslash.
func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}
