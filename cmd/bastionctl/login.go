package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api"
)

// credentials is what `bastionctl login` keeps for later commands (the
// native tunnel): the bastion and an API token, in a file only its owner
// can read.
type credentials struct {
	Server string `json:"server"` // host[:port] as given
	// Address, when set, is dialled instead of resolving Server.
	Address  string    `json:"address,omitempty"`
	CA       string    `json:"ca,omitempty"`
	Insecure bool      `json:"insecure,omitempty"`
	User     string    `json:"user"`
	Token    string    `json:"token"`
	TokenID  string    `json:"token_id"`
	Expires  time.Time `json:"expires"`
}

// credentialsPath is where the credentials are kept: $BASTION_CREDENTIALS,
// else bastiond/credentials.json under the user's config directory
// (os.UserConfigDir: $XDG_CONFIG_HOME or ~/.config on Linux,
// ~/Library/Application Support on macOS, %AppData% on Windows).
func credentialsPath() (string, error) {
	if p := os.Getenv("BASTION_CREDENTIALS"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no place for credentials (set BASTION_CREDENTIALS): %w", err)
	}
	return filepath.Join(dir, "bastiond", "credentials.json"), nil
}

func (c credentials) save() (string, error) {
	path, err := credentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	data, _ := json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	f, err := createPrivate(tmp)
	if err != nil {
		return "", err
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, os.Rename(tmp, path)
}

func loadCredentials() (credentials, string, error) {
	var c credentials
	path, err := credentialsPath()
	if err != nil {
		return c, "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, path, errors.New("not logged in: run bastionctl login")
	}
	if err != nil {
		return c, path, err
	}
	return c, path, json.Unmarshal(data, &c)
}

// httpClient is a client for the bastion in c, checking its certificate
// against the system roots or c.CA.
func (c credentials) httpClient() (*http.Client, error) {
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if c.Address != "" {
				addr = c.Address
			}
			return dialer.DialContext(ctx, network, addr)
		}}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func (c credentials) url(path string) string {
	server := c.Server
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "443")
	}
	return "https://" + server + path
}

// apiCall sends a JSON request to the bastion and decodes the answer.
func (c credentials) apiCall(ctx context.Context, method, path, bearer string, in, out any) error {
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		data, _ := json.Marshal(in)
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func newLogin() *cobra.Command {
	var c credentials
	var ttl, code, comment, sso string
	var scopes []string
	var stdin, noBrowser bool
	cmd := &cobra.Command{
		Use:   "login --server HOST[:PORT] (--user NAME | --sso[=PROVIDER])",
		Short: "Sign in to a bastion and keep an API token for the tunnel commands",
		Long: `Sign in to a bastion with your user name, password and, if you use one, the
code from your authenticator app, or with --sso through the organisation's
single sign-on provider (your browser opens at its sign-in page and comes
back to bastionctl; --no-browser, or a machine without one, prints an address
to open elsewhere and asks for the code that page shows). Either way, keep
the API token it issues (scoped, expiring, revocable) in
bastiond/credentials.json under your config directory, readable by you only: ~/.config on Linux (mode 0600), ~/Library/Application Support on
macOS (mode 0600), %AppData% on Windows (an access list naming only you).
BASTION_CREDENTIALS overrides the path. An admin lists and revokes tokens
with bastionctl tokens; bastionctl logout revokes yours.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _ := os.Hostname()
			if comment == "" {
				comment = "bastionctl on " + host
			}
			if sso != "" {
				if c.Server == "" {
					return errors.New("--server is required")
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), ssoWait+time.Minute)
				defer cancel()
				resp, err := ssoLogin(ctx, c, sso, noBrowser, bufio.NewReader(cmd.InOrStdin()), cmd.ErrOrStderr(),
					api.SSOTokenRequest{Scopes: scopes, TTL: ttl, Comment: comment})
				if err != nil {
					return err
				}
				c.User = resp.User
				return keep(cmd, c, resp)
			}
			if c.Server == "" || c.User == "" {
				return errors.New("--server and --user (or --sso) are required")
			}
			var pw string
			var err error
			in := bufio.NewReader(cmd.InOrStdin())
			if stdin {
				if pw, err = passwordLine(in); err != nil {
					return err
				}
			} else if pw, err = readSecret("Password for " + c.User + ": "); err != nil {
				return err
			}
			if code == "" && !stdin {
				fmt.Fprint(os.Stderr, "Code from your authenticator app (Enter if none): ")
				line, _ := in.ReadString('\n')
				code = strings.TrimSpace(line)
			}
			var resp api.TokenResponse
			req := api.TokenRequest{User: c.User, Password: pw, Code: code, Scopes: scopes, TTL: ttl, Comment: comment}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := c.apiCall(ctx, http.MethodPost, "/api/tokens", "", req, &resp); err != nil {
				return err
			}
			return keep(cmd, c, resp)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Server, "server", "", "the bastion's name, as in its certificate, with :PORT if not 443")
	f.StringVar(&c.Address, "address", "", "dial this HOST:PORT instead of resolving --server")
	f.StringVar(&c.User, "user", localUser(), "your user name on the bastion")
	f.StringVar(&c.CA, "ca", "", "PEM file of the CA (or self-signed certificate) to trust")
	f.BoolVar(&c.Insecure, "insecure", false, "do not check the bastion's certificate at all (a throwaway lab or demo with a self-signed one; otherwise give --ca)")
	f.StringVar(&ttl, "ttl", "", "token lifetime, e.g. 8h (default 12h, at most 720h)")
	f.StringSliceVar(&scopes, "scope", nil, "token scopes: api, tunnel (default both)")
	f.StringVar(&code, "code", "", "the authenticator app's code")
	f.StringVar(&comment, "comment", "", "a note shown in bastionctl tokens list")
	f.BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	f.StringVar(&sso, "sso", "", "sign in through the bastion's single sign-on provider PROVIDER (--sso alone: its only one)")
	f.Lookup("sso").NoOptDefVal = ssoAny
	f.BoolVar(&noBrowser, "no-browser", false, "with --sso: print the address to open in a browser elsewhere, and read the code it shows")
	return cmd
}

// keep saves the token of resp with c and says so.
func keep(cmd *cobra.Command, c credentials, resp api.TokenResponse) error {
	c.Token, c.TokenID, c.Expires = resp.Secret, resp.ID, resp.Expires
	path, err := c.save()
	if err != nil {
		return fmt.Errorf("signed in, but cannot keep the token: %w", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "signed in to %s as %s; token %s (%s) valid until %s, kept in %s\n",
		printable(c.Server), printable(c.User), printable(resp.ID), printable(strings.Join(resp.Scopes, ", ")),
		resp.Expires.Local().Format(time.DateTime), printable(path))
	return nil
}

func newLogout() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the API token bastionctl login kept, and forget it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, path, err := loadCredentials()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			revokeErr := c.apiCall(ctx, http.MethodDelete, "/api/tokens/current", c.Token, nil, nil)
			if err := os.Remove(path); err != nil {
				return err
			}
			if revokeErr != nil {
				return fmt.Errorf("token forgotten here, but the bastion did not confirm its revocation (%v); an admin can revoke %s with bastionctl tokens revoke", revokeErr, printable(c.TokenID))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked and forgotten\n", printable(c.TokenID))
			return nil
		},
	}
}

// localUser is the name of the user running bastionctl, the default of
// --user: $USER, or $USERNAME on Windows.
func localUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return os.Getenv("USERNAME")
}

// passwordLine reads a password from the first line of in (standard
// input), without its line ending: "\n", or "\r\n" as Windows writes it.
func passwordLine(in *bufio.Reader) (string, error) {
	line, err := in.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
