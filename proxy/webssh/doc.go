// Package webssh is the browser SSH terminal's server side: it speaks a small
// WebSocket protocol with the page (web/src/ssh.ts), and SSH with the target
// through a broker session, using golang.org/x/crypto/ssh. The bastion
// terminates SSH: it checks the target's pinned host key, authenticates with
// what the user typed (or a short-lived certificate from the bastion's CA),
// asks for a PTY and a shell, and relays the terminal both ways, recording
// the output when the user's role says so.
//
// # Protocol
//
// The page opens wss://HOST/ws/ssh?ticket=T (subprotocol "bastion-ssh.v1")
// as soon as it loads, so that the single-use ticket is redeemed at once; the
// user then has Params.CredentialTimeout (2 minutes) to answer the prompt,
// and as long again for each keyboard-interactive prompt.
// Text frames carry one JSON object each, with a "type"; binary frames carry
// terminal bytes. A message of either kind is at most 64 KiB.
//
// Server to browser:
//
//	{"type":"hello","target":"vm1","logins":["lab"],"certificate":false,
//	 "clipboard":true,"files":true,"recorded":false,"idle_timeout":1200}
//	    Sent first. logins: the account names the user's roles allow on the
//	    target (absent: any). certificate: the bastion signs a certificate
//	    for the login, so the page asks only for the login name.
//	    clipboard: copy and paste allowed. files: the file panel is
//	    offered (see Files). recorded: the session's output is
//	    recorded. idle_timeout: seconds without a keystroke or output (0:
//	    no limit).
//	{"type":"prompt","name":"","instruction":"","prompts":[{"text":"Password: ","echo":false}]}
//	    A keyboard-interactive challenge from the machine, after "auth" and
//	    before "ready" or "auth_failed"; answered with "answers", one per
//	    prompt, in order. It comes when the page sent no password or key,
//	    or when the machine asks for more (a second factor).
//	{"type":"auth_failed","message":"Wrong login name or password.","retry":true}
//	    The target refused the credentials, or the key could not be read
//	    (message says which); with retry the page asks again (three
//	    attempts in all), without it an "end" follows.
//	{"type":"ready","session":"5f2c0a9e13b7"}
//	    The shell is open: the terminal follows in binary frames. session
//	    names the file panel's routes.
//	{"type":"idle_warning","seconds":60}
//	    The session ends for inactivity in that many seconds unless
//	    something is typed or shown; {"type":"active"} clears the warning.
//	{"type":"watchers","watchers":["carol"]}
//	    Who watches the session live (auditors, Params.Watch; see
//	    Watch for their side), each time one joins or leaves; an empty
//	    list when the last one left. The page shows a banner.
//	{"type":"end","reason":"exit","message":"The remote shell exited (status 0).","exit_status":0,"reconnect":false}
//	    The last message before the close. reason is one of exit, killed,
//	    idle, max_duration, access_revoked, network (the machine stopped
//	    answering), unreachable (it could not be reached), capacity,
//	    user_limit, host_key_mismatch, host_key_unknown, auth_failed,
//	    denied (login not allowed), shutdown, error. message is a sentence
//	    for the user. exit_status is present only for an exit with a
//	    status (not for a signal, nor when the machine closed the session
//	    without one). reconnect says whether a Reconnect button makes
//	    sense (network, unreachable, capacity, user_limit, shutdown).
//
// Browser to server:
//
//	{"type":"auth","login":"lab","password":"…","cols":120,"rows":40}
//	{"type":"auth","login":"lab","private_key":"-----BEGIN OPENSSH PRIVATE KEY-----…","passphrase":"…","cols":120,"rows":40}
//	{"type":"auth","login":"lab","cols":120,"rows":40}
//	    The credentials: a password, a private key (PEM, with its
//	    passphrase if encrypted), or nothing: then the bastion uses its
//	    certificate when hello.certificate is true, and otherwise relays
//	    the machine's prompts. cols and rows (1 to 1000 each) are required.
//	    Never logged, never recorded, wiped once used.
//	{"type":"answers","answers":["…"]}
//	{"type":"resize","cols":132,"rows":43}
//	    1 to 1000 each; other sizes are ignored.
//	{"type":"paste","data":"…"}
//	    Pasted text, exactly the bytes the terminal would send (with the
//	    bracketed-paste markers when the application turned that mode on);
//	    dropped, and logged as refused, when hello.clipboard is false.
//	    Keystrokes go in binary frames.
//
// A message of another type while the page waits for credentials or answers
// ends the session with reason "error"; once the shell is open, unknown
// messages are ignored. A browser that goes away ends the session with
// reason "client closed".
//
// # Files
//
// With Params.Files, the file panel's requests reach Files.Serve through
// the portal's routes /api/files/{session}/{op} (see files.go for why
// HTTPS and not this socket): list a directory, download a file, upload
// one (never over an existing name), make a directory, over SFTP on the
// terminal's own SSH connection. Each file that passed, or was cut off,
// is a file_transfer event with its SHA-256; a role without file
// transfer gets file_transfer_refused for every request.
//
// # Records
//
// Every attempt to log in is a broker session with its own start and end
// record: an attempt the machine refused ends with reason "auth failed", a
// shell that exited with "remote exit (status N)" or "remote exit (signal
// S)", a recording that failed with "recording failed: CAUSE" (a
// recording that cannot be created refuses the session before its shell
// opens), a host key check
// with "host key mismatch: …" or "host key not pinned: …"; the broker's own
// reasons otherwise.
package webssh
