// Package auth holds the bastion's local accounts and proves who a user is:
// argon2id password hashes and optional TOTP secrets (RFC 6238) kept in the
// state store (internal/store), API tokens for the CLI, and login throttling with
// exponential backoff per user and per source address, then lockout.
//
// Every way a login can fail (no such user, wrong password, wrong or missing
// code, disabled, locked, throttled) returns the one error ErrLoginFailed, and
// an unknown user costs the same hashing work as a known one, so that a
// caller learns nothing about which accounts exist. Passwords pass through
// this package only to be hashed or checked; they are never logged or stored.
package auth
