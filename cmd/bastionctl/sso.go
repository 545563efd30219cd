package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/bastiond/bastiond/api"
)

// ssoAny is --sso given without a provider: the bastion's only one.
const ssoAny = "*"

// ssoWait bounds how long bastionctl waits for the browser's sign-in.
const ssoWait = 5 * time.Minute

// ssoLogin signs in through the single sign-on provider named provider
// (ssoAny: the only one) as RFC 8252 describes: the system browser signs
// in at the provider, and comes back to a listener on 127.0.0.1 with a
// one-time code, which bastionctl redeems with its PKCE verifier for an
// API token. Where no browser opens (noBrowser, or none to start), it
// prints the URL and reads the code the page shows from in.
func ssoLogin(ctx context.Context, c credentials, provider string, noBrowser bool, in *bufio.Reader, out io.Writer, req api.SSOTokenRequest) (api.TokenResponse, error) {
	if provider == ssoAny {
		var ps []api.SSOProvider
		if err := c.apiCall(ctx, http.MethodGet, api.SSOProvidersPath, "", nil, &ps); err != nil {
			return api.TokenResponse{}, fmt.Errorf("cannot list the bastion's sign-in providers: %w", err)
		}
		switch len(ps) {
		case 0:
			return api.TokenResponse{}, errors.New("the bastion offers no single sign-on")
		case 1:
			provider = ps[0].Name
		default:
			names := make([]string, len(ps))
			for i, p := range ps {
				names[i] = printable(p.Name) + " (" + printable(p.Title) + ")"
			}
			return api.TokenResponse{}, fmt.Errorf("the bastion offers several providers; name one with --sso=NAME: %s", strings.Join(names, ", "))
		}
	}
	var raw [32]byte
	rand.Read(raw[:])
	verifier := base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	start := func(port int) string {
		q := url.Values{api.SSOPortParam: {strconv.Itoa(port)}, api.SSOChallengeParam: {challenge}}
		return c.url(api.SSOPath + url.PathEscape(provider) + "?" + q.Encode())
	}

	var code string
	var err error
	if !noBrowser {
		code, err = ssoThroughBrowser(ctx, start, out)
		if errors.Is(err, errNoBrowser) {
			fmt.Fprintf(out, "No browser could be opened (%v).\n", errors.Unwrap(err))
			noBrowser = true
		} else if err != nil {
			return api.TokenResponse{}, err
		}
	}
	if noBrowser {
		fmt.Fprintf(out, "Open this address in a browser, sign in, and type here the code the page shows:\n\n  %s\n\nCode: ", start(0))
		line, err := in.ReadString('\n')
		if err != nil && strings.TrimSpace(line) == "" {
			return api.TokenResponse{}, errors.New("no code typed")
		}
		code = strings.TrimSpace(line)
	}
	req.Code, req.Verifier = code, verifier
	var resp api.TokenResponse
	err = c.apiCall(ctx, http.MethodPost, api.SSOTokenPath, "", req, &resp)
	return resp, err
}

// errNoBrowser wraps why no browser could be started.
var errNoBrowser = errors.New("no browser")

// ssoThroughBrowser listens on a loopback port, opens start(port) in the
// system browser, and returns the code the bastion sends back there.
func ssoThroughBrowser(ctx context.Context, start func(port int) string, out io.Writer) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("%w: cannot listen on 127.0.0.1: %v", errNoBrowser, err)
	}
	defer ln.Close()
	codes := make(chan string, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := r.URL.Query().Get("code")
		if r.URL.Path != "/callback" || code == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Connection", "close")
		io.WriteString(w, "<!doctype html><title>Signed in</title><p>Signed in: bastionctl has its token. You can close this tab.</p>\n")
		// The page reaches the browser before bastionctl, handed the
		// code, stops listening.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case codes <- code:
		default:
		}
	})}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	u := start(ln.Addr().(*net.TCPAddr).Port)
	if err := openBrowser(u); err != nil {
		return "", fmt.Errorf("%w: %w", errNoBrowser, err)
	}
	fmt.Fprintf(out, "Sign in in the browser that opened; if none did, open:\n\n  %s\n\n", u)
	ctx, cancel := context.WithTimeout(ctx, ssoWait)
	defer cancel()
	select {
	case code := <-codes:
		return code, nil
	case <-ctx.Done():
		return "", fmt.Errorf("no sign-in within %s", ssoWait)
	}
}

// openBrowser opens u in the user's browser: $BROWSER if set (a command,
// with %s for the address or the address appended), else the system's
// opener.
func openBrowser(u string) error {
	var cmd *exec.Cmd
	if b := strings.TrimSpace(strings.Split(os.Getenv("BROWSER"), string(os.PathListSeparator))[0]); b != "" {
		args := strings.Fields(b)
		replaced := false
		for i, a := range args {
			if strings.Contains(a, "%s") {
				args[i], replaced = strings.ReplaceAll(a, "%s", u), true
			}
		}
		if !replaced {
			args = append(args, u)
		}
		cmd = exec.Command(args[0], args[1:]...)
	} else {
		switch runtime.GOOS {
		case "darwin":
			cmd = exec.Command("open", u)
		case "windows":
			cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
		default:
			if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
				return errors.New("no display ($DISPLAY and $WAYLAND_DISPLAY are unset) and no $BROWSER")
			}
			cmd = exec.Command("xdg-open", u)
		}
	}
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}
