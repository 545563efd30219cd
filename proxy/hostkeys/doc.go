// Package hostkeys pins the keys that targets prove themselves with: SSH host
// keys and RDP server certificates, in one store kept in the daemon's state
// database. A session goes ahead only when the target presents a key pinned
// for it (invariant 7).
//
// A key the bastion sees for a target that has nothing pinned is recorded as
// pending: trust on first use, but only once an admin approves it with
// `bastionctl hostkeys pin`. `bastionctl hostkeys scan` collects every host
// key a target's SSH server has, and the certificate its RDP server
// presents, so that the admin can compare them with the machine's own
// before pinning. A key that differs from the pinned ones is
// refused, and recorded as pending too, so that a deliberate change of key is
// one `pin` away once the admin has checked it.
package hostkeys
