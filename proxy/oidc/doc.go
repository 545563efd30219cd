// Package oidc signs users in through OpenID Connect providers (Entra ID,
// Okta, Keycloak, Google, Dex...): the Authorization Code flow with PKCE,
// state and nonce, the provider's discovery document and its rotating
// signing keys (coreos/go-oidc with x/oauth2).
//
// A Set holds the configured providers. Begin starts a flow: it returns the
// provider's authorization URL and the flow's cookie, which holds the
// state, the nonce and the PKCE verifier sealed with the Set's key (AES-GCM):
// nothing is stored for a flow that is only started, so strangers starting
// flows cost the bastion nothing but a redirect. Finish checks the
// provider's answer against that cookie, exchanges the code (with the
// verifier) at the provider's token endpoint, verifies the ID token
// (signature by a key of the provider's JWKS, issuer, audience, expiry,
// nonce) and returns who signed in: their name (the configured user claim),
// subject and groups. A state that completed a sign-in is remembered in the
// store until its flow would have expired, so that an answer replayed on
// this or any other instance of a cluster is refused even by a provider
// that would redeem a code twice.
//
// A provider that cannot be reached at start is discovered at first use,
// and again after a failure (at most every RetryAfter), so the daemon
// starts and serves local accounts while an IdP is down.
//
// Every refusal is an *Error whose Reason is the class the audit trail
// records and whose Message is what the user reads. Nothing secret (a code,
// a token, the client secret, the verifier) is in either, nor logged.
package oidc
