package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net/url"
	"strings"
	"time"

	"rsc.io/qr"
)

// TOTP (RFC 6238) as authenticator apps implement it: HMAC-SHA1, 30-second
// steps, six digits. One step either side of now is accepted for clock
// drift, and a step is accepted once only, so that a code seen over a
// shoulder cannot be replayed.
const (
	totpPeriod = 30
	totpDigits = 6
	totpSkew   = 1
	totpSecret = 20 // bytes: RFC 4226 recommends 160 bits
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func newTOTPSecret() ([]byte, error) {
	s := make([]byte, totpSecret)
	_, err := rand.Read(s)
	return s, err
}

// totpAt is the code for a time step (RFC 4226 5.3 dynamic truncation).
func totpAt(secret []byte, step int64) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(step))
	mac := hmac.New(sha1.New, secret)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	n := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	return fmt.Sprintf("%0*d", totpDigits, n%1_000_000)
}

func totpStep(t time.Time) int64 { return t.Unix() / totpPeriod }

// checkTOTP looks for code within the skew around now, in steps after
// last (the last step accepted). It returns the matching step.
func checkTOTP(secret []byte, code string, now time.Time, last int64) (int64, bool) {
	step, ok, _ := matchTOTP(secret, code, now, last)
	return step, ok
}

// matchTOTP is checkTOTP that also says whether code matched a step at or
// before last: a code used already (replayed, or typed twice).
func matchTOTP(secret []byte, code string, now time.Time, last int64) (found int64, ok, reused bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != totpDigits {
		return 0, false, false
	}
	cur := totpStep(now)
	matched, used := 0, 0
	// Try every step in the window, whatever matches, so the time taken
	// does not tell which one did.
	for step := cur - totpSkew; step <= cur+totpSkew; step++ {
		m := subtle.ConstantTimeCompare([]byte(totpAt(secret, step)), []byte(code))
		if m == 1 && step > last {
			found, matched = step, 1
		} else if m == 1 {
			used = 1
		}
	}
	return found, matched == 1, matched == 0 && used == 1
}

// TOTPEnrolment is what a user needs to set up an authenticator app.
type TOTPEnrolment struct {
	// URI is the otpauth:// URI (Google Authenticator key URI format).
	URI string `json:"uri"`
	// Secret is the base32 secret, for typing by hand.
	Secret string `json:"secret"`
}

func totpEnrolment(issuer, account string, secret []byte) TOTPEnrolment {
	label := url.PathEscape(issuer) + ":" + url.PathEscape(account)
	q := url.Values{}
	q.Set("secret", b32.EncodeToString(secret))
	q.Set("issuer", issuer)
	q.Set("algorithm", "SHA1")
	q.Set("digits", fmt.Sprint(totpDigits))
	q.Set("period", fmt.Sprint(totpPeriod))
	return TOTPEnrolment{URI: "otpauth://totp/" + label + "?" + q.Encode(), Secret: b32.EncodeToString(secret)}
}

// QRPNG renders the enrolment URI as a PNG QR code, for the portal.
func (e TOTPEnrolment) QRPNG() ([]byte, error) {
	c, err := qr.Encode(e.URI, qr.M)
	if err != nil {
		return nil, fmt.Errorf("auth: QR code: %w", err)
	}
	c.Scale = 6
	return c.PNG(), nil
}

// QRText renders the enrolment URI as a QR code in text, two modules per
// character cell with Unicode half blocks, dark on a light terminal or
// light on a dark one alike (the quiet zone is drawn).
func (e TOTPEnrolment) QRText() (string, error) {
	c, err := qr.Encode(e.URI, qr.M)
	if err != nil {
		return "", fmt.Errorf("auth: QR code: %w", err)
	}
	const quiet = 2
	dark := func(x, y int) bool {
		return x >= 0 && y >= 0 && x < c.Size && y < c.Size && c.Black(x, y)
	}
	var b strings.Builder
	for y := -quiet; y < c.Size+quiet; y += 2 {
		for x := -quiet; x < c.Size+quiet; x++ {
			// Drawn inverted: a light module is a printed block, so the
			// code reads on the usual dark terminal background.
			top, bottom := !dark(x, y), !dark(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}
