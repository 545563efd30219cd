// The SSH terminal page: one WebSocket per connect ticket, speaking
// bastion-ssh.v1 (protocol.ts), from the sign-in prompt to the end of the
// session, and a Reconnect that gets a new ticket and starts over.
import { newTicket, SessionExpired } from "./api";
import { Clipboard } from "./clipboard";
import { FilePanel } from "./files";
import { credentialForm, promptForm } from "./forms";
import { type EndAction, Layout } from "./layout";
import { type ClientMessage, type End, type Hello, open, parse, pasteMessages, type ServerMessage } from "./protocol";
import { TerminalView } from "./terminal";

export interface SSHConfig {
  ticket: string;
  target: string;
  /** The web session's CSRF token, for POST /api/connect. */
  csrf: string;
}

type Phase = "connecting" | "signing-in" | "ready" | "ended";

export function startSSH(root: HTMLElement, config: SSHConfig): void {
  new SSHPage(root, config).connect(config.ticket);
}

class SSHPage {
  readonly #config: SSHConfig;
  readonly #ui: Layout;
  readonly #view: TerminalView;
  readonly #clipboard: Clipboard;
  readonly #files: FilePanel;
  // The fields below describe the current WebSocket; connect resets them.
  #ws: WebSocket | undefined;
  #phase: Phase = "connecting";
  #hello: Hello | undefined;
  #disconnected = false; // the user pressed Disconnect
  /** The terminal size the server knows. */
  #size = { cols: 0, rows: 0 };
  /** The login used last, offered again after a failure and on reconnect. */
  #login = "";

  constructor(root: HTMLElement, config: SSHConfig) {
    this.#config = config;
    this.#files = new FilePanel({ csrf: config.csrf, closed: () => this.#view.term.focus() });
    this.#ui = new Layout(root, {
      target: config.target,
      protocol: "SSH",
      screen: { className: "terminal", label: "Terminal" },
      tools: [this.#files.button],
      onDisconnect: () => this.#disconnect(),
    });
    if (this.#ui.screen.parentElement) this.#files.mount(this.#ui.screen.parentElement);
    this.#view = new TerminalView(this.#ui.screen, {
      input: (bytes) => this.#input(bytes),
      resize: () => this.#sendSize(),
    });
    this.#clipboard = new Clipboard(this.#ui.screen, this.#view.term, {
      paste: (data) => {
        if (this.#phase !== "ready") return;
        this.#ui.clearIdleWarning();
        for (const msg of pasteMessages(data)) this.#send(msg);
      },
      refused: () => this.#ui.noteClipboardRefused(),
      failed: (message) => this.#ui.status(message),
    });
  }

  connect(ticket: string): void {
    const ws = open(ticket);
    this.#ws = ws;
    this.#phase = "connecting";
    this.#hello = undefined;
    this.#disconnected = false;
    this.#clipboard.allowed = false;
    this.#files.available(false);
    this.#files.session("");
    this.#view.term.reset();
    this.#view.term.options.disableStdin = true;
    this.#ui.showScreen(false);
    this.#ui.status("Connecting…");
    this.#ui.canDisconnect(true);
    // A replaced socket's late events are ignored.
    ws.addEventListener("message", (e: MessageEvent<string | ArrayBuffer>) => {
      if (ws !== this.#ws) return;
      if (typeof e.data === "string") {
        const msg = parse(e.data);
        if (msg) this.#handle(msg);
      } else {
        this.#view.term.write(new Uint8Array(e.data));
      }
    });
    ws.addEventListener("close", () => {
      if (ws === this.#ws) this.#closed();
    });
  }

  #handle(msg: ServerMessage): void {
    switch (msg.type) {
      case "hello":
        this.#hello = msg;
        this.#clipboard.allowed = msg.clipboard;
        this.#files.available(msg.files === true);
        this.#ui.session(msg);
        this.#askCredentials();
        break;
      case "prompt":
        if (msg.prompts.length === 0) {
          this.#send({ type: "answers", answers: [] });
          break;
        }
        this.#ui.status("The machine asks a question");
        this.#ui.showPanel(
          promptForm(msg, (answers) => {
            this.#ui.status("Signing in…");
            this.#send({ type: "answers", answers });
          }),
        );
        break;
      case "auth_failed":
        if (msg.retry) this.#askCredentials(msg.message);
        else this.#ui.status(msg.message);
        break;
      case "ready":
        this.#phase = "ready";
        this.#ui.hidePanel();
        this.#ui.showScreen(true);
        this.#ui.status("Connected");
        this.#view.term.options.disableStdin = false;
        this.#view.fit();
        this.#sendSize();
        this.#view.term.focus();
        this.#files.session(msg.session);
        break;
      case "idle_warning":
        this.#ui.idleWarning(msg.seconds);
        break;
      case "active":
        this.#ui.clearIdleWarning();
        break;
      case "watchers":
        this.#ui.watchers(msg.watchers);
        break;
      case "end":
        this.#end(msg);
        break;
    }
  }

  #askCredentials(error?: string): void {
    if (!this.#hello) return;
    this.#phase = "signing-in";
    this.#ui.status(error ? "Sign-in failed" : "Sign in");
    const form = credentialForm({ hello: this.#hello, login: this.#login, ...(error ? { error } : {}) }, (login, creds) => {
      this.#login = login;
      this.#view.fit();
      const { cols, rows } = this.#view.term;
      this.#size = { cols, rows };
      this.#ui.status("Signing in…");
      this.#send({ type: "auth", login, cols, rows, ...creds });
    });
    this.#ui.showPanel(form);
  }

  #input(bytes: Uint8Array<ArrayBuffer>): void {
    if (this.#phase !== "ready" || this.#ws?.readyState !== WebSocket.OPEN) return;
    this.#ui.clearIdleWarning();
    this.#ws.send(bytes);
  }

  /** sendSize tells the server the terminal's size once the shell is open, if it changed. */
  #sendSize(): void {
    // The terminal fits itself once while this page is being built.
    if (this.#phase !== "ready") return;
    const { cols, rows } = this.#view.term;
    if (cols === this.#size.cols && rows === this.#size.rows) return;
    this.#size = { cols, rows };
    this.#send({ type: "resize", cols, rows });
  }

  #send(msg: ClientMessage): void {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  #end(msg: End): void {
    this.#phase = "ended";
    this.#files.session("");
    this.#view.term.options.disableStdin = true;
    this.#ui.watchers([]);
    this.#ui.ended(msg.message, msg.reconnect ? [this.#reconnectAction()] : []);
  }

  // A close after "end" is the expected one. Any other close gets a message
  // of its own and a Reconnect, which fetches a new ticket.
  #closed(): void {
    if (this.#phase === "ended") return;
    this.#phase = "ended";
    this.#files.session("");
    this.#view.term.options.disableStdin = true;
    let message = "The connection to the bastion was lost.";
    if (this.#disconnected) message = "You disconnected.";
    else if (!this.#hello) message = "The bastion did not open the session. A connect link works once and only for a minute.";
    this.#ui.ended(message, [this.#reconnectAction()]);
  }

  #disconnect(): void {
    this.#disconnected = true;
    this.#ui.canDisconnect(false);
    this.#ws?.close(1000, "disconnect");
  }

  #reconnectAction(): EndAction {
    return { label: "Reconnect", run: () => void this.#reconnect() };
  }

  async #reconnect(): Promise<void> {
    this.#ui.status("Reconnecting…");
    try {
      const { ticket, url } = await newTicket(this.#config.target, "ssh", this.#config.csrf);
      history.replaceState(null, "", url);
      this.#ui.clearEnded();
      this.connect(ticket);
    } catch (err) {
      if (err instanceof SessionExpired) {
        this.#ui.ended("Your session has expired, start again from the portal.", [], err.message);
      } else {
        this.#ui.ended("Could not reconnect.", [this.#reconnectAction()], err instanceof Error ? err.message : String(err));
      }
    }
  }
}
