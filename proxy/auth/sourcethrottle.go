package auth

import "net/netip"

// SourceFailed counts a failure of src that names no account (the secret
// of no shareable link) against the source, as a sign-in with an unknown
// name is: enough of them and its sign-ins and links wait too
// (SourceWait).
func (a *Authenticator) SourceFailed(src netip.Addr) error {
	_, err := a.throttle.fail("", src, false, a.now())
	return err
}
