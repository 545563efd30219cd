// The remote desktop page: the credentials form, then one RDP connection
// per connect ticket through the bastion's RDCleanPath gateway
// (wss://host/ws/rdp, the ticket as the RDCleanPath proxy authorization),
// drawn by <iron-remote-desktop> (remotedesktop.ts). The client itself sees
// only an error kind or the end of its WebSocket; the bastion says why a
// desktop ended at /api/rdp/outcome, asked after every end. Try again and
// Reconnect get a new ticket and go back to the form.
import type { IronError, NewSessionInfo } from "@devolutions/iron-remote-desktop";
import { displayControl } from "@devolutions/iron-remote-desktop-rdp";
import { newTicket, rdpOutcome, type RDPOutcome, rdpWatchers, SessionExpired } from "./api";
import { type DesktopCredentials, desktopForm } from "./forms";
import { h } from "./dom";
import { holdAltGr, type KeyboardMode, saveKeyboardMode, savedKeyboardMode } from "./keyboard";
import { type EndAction, Layout } from "./layout";
import { DesktopFiles } from "./rdpfiles";
import { IronErrorKind, isIronError, loadBackend, RemoteDesktop } from "./remotedesktop";

export interface DesktopConfig {
  ticket: string;
  target: string;
  /** The web session's CSRF token, for POST /api/connect. */
  csrf: string;
  /** Whether the policy lets this desktop share the clipboard. */
  clipboard: boolean;
  /** Whether it lets files through the clipboard (rdpfiles.ts). */
  files?: boolean;
}

/** The page's state, in #client's data-state for the browser tests. */
type State = "credentials" | "connecting" | "connected" | "ended";

/** How a connection ended, as the client saw it. */
interface End {
  /** What connect or run threw. */
  error?: unknown;
  /** Whether the desktop had been shown. */
  connected: boolean;
  /** The termination reason of a session that ended cleanly. */
  reason?: string;
}

/** What the end panel says and offers. */
interface Verdict {
  message: string;
  action?: "Try again" | "Reconnect";
  detail?: string;
}

declare global {
  interface Window {
    /** The canvas the remote desktop is drawn into, for the browser tests. */
    bastionDesktopCanvas?: () => HTMLCanvasElement | null;
  }
}

const expiredSession = "Your session has expired, start again from the portal.";

/** A ticket older than this is replaced before connecting: the user may take a while to type. */
const ticketFreshness = 45_000; // ms

/** How long the window must keep a size before the desktop follows it. */
const resizeDelay = 300; // ms

/** How often the page asks who watches the desktop. */
const watchersPoll = 3_000; // ms

/** How long a Disconnect may take before the page stops waiting. */
const disconnectGrace = 5_000; // ms

export function startDesktop(root: HTMLElement, config: DesktopConfig): void {
  new DesktopPage(root, config).askCredentials();
}

class DesktopPage {
  readonly #root: HTMLElement;
  readonly #config: DesktopConfig;
  readonly #ui: Layout;
  readonly #fitButton = tool("Fit to window", "The desktop's size follows the window");
  readonly #fullscreenButton = tool("Full screen");
  readonly #ctrlAltDelButton = tool("Ctrl+Alt+Del", "Send Ctrl+Alt+Del to the desktop");
  readonly #scancodesButton = tool(
    "Scancodes",
    "Send keys by their place on the keyboard (games, shortcuts), not as the characters they make; the machine's layout then applies",
  );
  /** How keys reach the machine (keyboard.ts); remembered per browser. */
  #keyboard: KeyboardMode = savedKeyboardMode();
  #ticket: string;
  /** When the ticket was issued, as far as the page knows (performance.now()). */
  #ticketAt: number;
  /** The user name and domain used last, offered again; never the password. */
  #user = "";
  #domain = "";
  #fit = true;
  // The fields below describe the current connection; #connect resets them.
  /** Counts connections, so that a replaced one's late events are ignored. */
  #attempt = 0;
  #desktop: RemoteDesktop | undefined;
  #state: State = "credentials";
  #disconnected = false; // the user pressed Disconnect
  #ending = false;
  /** The size last asked of the desktop. */
  #size = { width: 0, height: 0 };
  #resizeTimer = 0;
  #warning = "";
  readonly #files: DesktopFiles | undefined;

  constructor(root: HTMLElement, config: DesktopConfig) {
    this.#root = root;
    this.#config = config;
    this.#ticket = config.ticket;
    this.#ticketAt = performance.now();
    this.#ui = new Layout(root, {
      target: config.target,
      protocol: "RDP",
      screen: { className: "desktop", label: "Remote desktop" },
      tools: [this.#fitButton, this.#fullscreenButton, this.#ctrlAltDelButton, this.#scancodesButton],
      onDisconnect: () => this.#disconnect(),
    });
    this.#ui.session({ recorded: false, clipboard: config.clipboard });
    if (config.clipboard && config.files) this.#files = new DesktopFiles(root, this.#ui.screen);

    this.#fitButton.setAttribute("aria-pressed", "true");
    this.#fitButton.addEventListener("click", () => this.#toggleFit());
    this.#fullscreenButton.hidden = !document.fullscreenEnabled;
    this.#fullscreenButton.setAttribute("aria-pressed", "false");
    this.#fullscreenButton.addEventListener("click", () => this.#toggleFullscreen());
    document.addEventListener("fullscreenchange", () => this.#fullscreenChanged());
    this.#ctrlAltDelButton.disabled = true;
    this.#ctrlAltDelButton.addEventListener("click", () => {
      this.#desktop?.api.ctrlAltDel();
      this.#desktop?.focus();
    });
    this.#scancodesButton.setAttribute("aria-pressed", String(this.#keyboard === "scancodes"));
    this.#scancodesButton.addEventListener("click", () => this.#toggleKeyboard());
    holdAltGr(() => (this.#keyboard === "unicode" ? this.#desktop?.element : undefined));
    new ResizeObserver(() => this.#screenResized()).observe(this.#ui.screen);

    window.bastionDesktopCanvas = () => this.#desktop?.canvas() ?? null;
    // Compiling the WebAssembly takes a moment: start while the user types.
    loadBackend().catch(() => {}); // reported when connecting
  }

  #setState(state: State): void {
    this.#state = state;
    this.#root.dataset.state = state;
  }

  askCredentials(): void {
    this.#setState("credentials");
    this.#ui.status("Sign in");
    this.#ui.canDisconnect(false);
    this.#ui.showPanel(
      desktopForm({ target: this.#config.target, user: this.#user, domain: this.#domain }, (creds) => void this.#connect(creds)),
    );
  }

  async #connect(creds: DesktopCredentials): Promise<void> {
    const attempt = ++this.#attempt;
    this.#user = creds.user;
    this.#domain = creds.domain;
    this.#disconnected = false;
    this.#ending = false;
    this.#warning = "";
    this.#setState("connecting");
    this.#ui.status("Connecting…");
    this.#ui.hidePanel();

    try {
      if (performance.now() - this.#ticketAt > ticketFreshness) await this.#renewTicket();
    } catch (err) {
      this.#ticketFailed(err);
      return;
    }
    const ticket = this.#ticket;

    let desktop: RemoteDesktop;
    try {
      await loadBackend();
      desktop = await RemoteDesktop.mount(this.#ui.screen, {
        clipboard: this.#config.clipboard,
        warning: (message) => {
          this.#warning = message;
          if (attempt === this.#attempt && this.#state === "connected") this.#ui.status(`Connected · ${message}`);
        },
      });
    } catch (err) {
      this.#showEnd({ message: "The remote desktop client could not start in this browser.", detail: describe(err) }, [
        { label: "Try again", run: () => void this.#retry() },
      ]);
      return;
    }
    if (attempt !== this.#attempt) return;
    this.#desktop = desktop;
    desktop.setUnicode(this.#keyboard === "unicode");

    let session: NewSessionInfo;
    try {
      const size = this.#screenSize();
      const builder = desktop.api
        .configBuilder()
        .withDestination(this.#config.target)
        .withProxyAddress(`wss://${location.host}/ws/rdp`)
        .withAuthToken(ticket)
        .withUsername(creds.user)
        .withPassword(creds.password)
        .withDesktopSize(size)
        .withExtension(displayControl(true));
      if (creds.domain) builder.withServerDomain(creds.domain);
      this.#size = size;
      this.#files?.attach(desktop.api); // before connect: the clipboard's file streams are negotiated then
      session = await desktop.api.connect(builder.build());
    } catch (error) {
      if (attempt === this.#attempt) await this.#ended(attempt, ticket, { error, connected: false });
      return;
    }
    if (attempt !== this.#attempt) return;

    this.#setState("connected");
    this.#ui.status(this.#warning ? `Connected · ${this.#warning}` : "Connected");
    this.#ui.canDisconnect(true);
    this.#ctrlAltDelButton.disabled = false;
    this.#files?.connected();
    this.#ui.showScreen(true);
    desktop.api.setVisibility(true);
    desktop.fit();
    desktop.focus();
    // The window may have changed while connecting.
    this.#screenResized();
    this.#watchWatchers(attempt, ticket);
    // Not awaited: the credentials need not stay reachable for the session's life.
    void this.#run(attempt, ticket, session);
  }

  /**
   * watchWatchers keeps the banner of who watches the desktop live up to
   * date while this connection lasts: the desktop's WebSocket carries only
   * RDP, so the page asks the bastion every few seconds.
   */
  #watchWatchers(attempt: number, ticket: string): void {
    const poll = async () => {
      if (attempt !== this.#attempt || this.#state !== "connected") {
        this.#ui.watchers([]);
        return;
      }
      this.#ui.watchers(await rdpWatchers(ticket));
      window.setTimeout(() => void poll(), watchersPoll);
    };
    void poll();
  }

  /** run draws the desktop until the session ends. */
  async #run(attempt: number, ticket: string, session: NewSessionInfo): Promise<void> {
    let end: End;
    try {
      end = { connected: true, reason: (await session.run()).reason() };
    } catch (error) {
      end = { error, connected: true };
    }
    await this.#ended(attempt, ticket, end);
  }

  /** ended asks the bastion how the connection ended and says so, once per connection. */
  async #ended(attempt: number, ticket: string, end: End): Promise<void> {
    if (attempt !== this.#attempt || this.#ending) return;
    this.#ending = true;
    window.clearTimeout(this.#resizeTimer);
    this.#ctrlAltDelButton.disabled = true;
    this.#ui.canDisconnect(false);
    this.#ui.status("Ending…");
    const outcome = await rdpOutcome(ticket);
    if (attempt !== this.#attempt) return;
    const verdict = judge(outcome, end, this.#disconnected);
    this.#files?.detach();
    this.#desktop?.remove();
    this.#desktop = undefined;
    this.#ui.showScreen(false);
    this.#showEnd(verdict, verdict.action ? [{ label: verdict.action, run: () => void this.#retry() }] : []);
  }

  #showEnd(verdict: Verdict, actions: EndAction[]): void {
    this.#setState("ended");
    this.#ui.ended(verdict.message, actions, verdict.detail);
  }

  #disconnect(): void {
    if (this.#state !== "connected" || !this.#desktop) return;
    this.#disconnected = true;
    this.#ui.canDisconnect(false);
    this.#ui.status("Disconnecting…");
    this.#desktop.api.shutdown();
    // A desktop that does not answer the shutdown is left behind.
    const attempt = this.#attempt;
    const ticket = this.#ticket;
    window.setTimeout(() => void this.#ended(attempt, ticket, { connected: true }), disconnectGrace);
  }

  /** retry gets a new ticket, the old one being spent, and asks for the credentials again. */
  async #retry(): Promise<void> {
    this.#attempt++; // a late end of the previous connection is ignored
    this.#ui.status("Getting a new connection link…");
    try {
      await this.#renewTicket();
    } catch (err) {
      this.#ticketFailed(err);
      return;
    }
    this.#ui.clearEnded();
    this.askCredentials();
  }

  async #renewTicket(): Promise<void> {
    const { ticket, url } = await newTicket(this.#config.target, "rdp", this.#config.csrf);
    this.#ticket = ticket;
    this.#ticketAt = performance.now();
    this.#root.dataset.ticket = ticket;
    history.replaceState(null, "", url);
  }

  #ticketFailed(err: unknown): void {
    if (err instanceof SessionExpired) {
      this.#showEnd({ message: expiredSession, detail: err.message }, []);
    } else {
      this.#showEnd({ message: "Could not get a new connection link.", detail: describe(err) }, [
        { label: "Try again", run: () => void this.#retry() },
      ]);
    }
  }

  /** screenSize is the room for the desktop, in CSS pixels, as display control accepts it. */
  #screenSize(): { width: number; height: number } {
    const r = this.#ui.screen.getBoundingClientRect();
    // MS-RDPEDISP: 200 to 8192 pixels each way, and an even width.
    const clamp = (v: number) => Math.min(8192, Math.max(200, Math.floor(v / 2) * 2));
    return { width: clamp(r.width), height: clamp(r.height) };
  }

  // With Fit to window on, the desktop's resolution follows the room it has
  // (display control: the server may ignore it). The component draws the
  // canvas at the asked size until the server answers; scaling it to fit
  // again keeps the picture right if the server does not.
  #screenResized(): void {
    window.clearTimeout(this.#resizeTimer);
    this.#resizeTimer = window.setTimeout(() => this.#followScreen(), resizeDelay);
  }

  #followScreen(): void {
    const desktop = this.#desktop;
    if (this.#state !== "connected" || !desktop) return;
    if (this.#fit) {
      const size = this.#screenSize();
      if (size.width !== this.#size.width || size.height !== this.#size.height) {
        this.#size = size;
        desktop.api.resize(size.width, size.height);
      }
    }
    desktop.fit();
  }

  #toggleFit(): void {
    this.#fit = !this.#fit;
    this.#fitButton.setAttribute("aria-pressed", String(this.#fit));
    if (this.#fit) this.#followScreen();
    this.#desktop?.focus();
  }

  #toggleKeyboard(): void {
    this.#keyboard = this.#keyboard === "unicode" ? "scancodes" : "unicode";
    saveKeyboardMode(this.#keyboard);
    this.#scancodesButton.setAttribute("aria-pressed", String(this.#keyboard === "scancodes"));
    this.#desktop?.setUnicode(this.#keyboard === "unicode");
    this.#desktop?.focus();
  }

  #toggleFullscreen(): void {
    const done = document.fullscreenElement ? document.exitFullscreen() : this.#root.requestFullscreen({ navigationUI: "hide" });
    done.catch(() => this.#ui.status("The browser did not allow full screen."));
    this.#desktop?.focus();
  }

  #fullscreenChanged(): void {
    const on = document.fullscreenElement === this.#root;
    this.#fullscreenButton.setAttribute("aria-pressed", String(on));
    this.#fullscreenButton.textContent = on ? "Exit full screen" : "Full screen";
  }
}

function tool(label: string, title?: string): HTMLButtonElement {
  return h("button", { type: "button", className: "tool", textContent: label, ...(title ? { title } : {}) });
}

/**
 * judge combines what the bastion says about the end (outcome) with what
 * the client saw. A wrong password is known only to the client; otherwise
 * the bastion knows better, and the client's error is the fallback.
 */
function judge(outcome: RDPOutcome | undefined, end: End, disconnected: boolean): Verdict {
  const err = isIronError(end.error) ? end.error : undefined;
  const kind = err?.kind();
  if (kind === IronErrorKind.WrongPassword || kind === IronErrorKind.LogonFailure) {
    return { message: "Wrong user name or password.", action: "Try again" };
  }
  if (outcome) {
    const message = outcome.message || "The session ended.";
    switch (outcome.reason) {
      case "expired":
      case "denied":
        return { message };
      case "client_closed":
        return disconnected ? { message: "The session ended.", action: "Reconnect" } : { message, action: "Reconnect" };
      case "target_closed":
        // A machine that closes the connection before the desktop opens has
        // refused the sign-in (FreeRDP's server, for one, says nothing more).
        if (!end.connected && !disconnected) {
          return { message: "The machine closed the connection while signing you in: check the user name and password.", action: "Try again", detail: describe(end.error) };
        }
        return { message: "The session ended.", action: "Reconnect" };
      case "killed":
      case "idle_timeout":
      case "max_duration":
        return { message, action: "Reconnect" };
      case "at_capacity":
      case "unreachable":
      case "negotiation":
      case "certificate":
      case "error":
        return { message, action: "Try again" };
      default:
        return { message, action: end.connected ? "Reconnect" : "Try again" };
    }
  }
  if (disconnected || (end.connected && !end.error)) {
    return end.reason ? { message: "The session ended.", action: "Reconnect", detail: end.reason } : { message: "The session ended.", action: "Reconnect" };
  }
  if (!err) {
    return { message: end.connected ? "The connection to the desktop was lost." : "The connection to the desktop failed.", action: "Try again", detail: describe(end.error) };
  }
  return fromClientError(err, end.connected);
}

/** fromClientError explains an error of the RDP client when the bastion said nothing. */
function fromClientError(err: IronError, connected: boolean): Verdict {
  const detail = describe(err);
  switch (err.kind()) {
    case IronErrorKind.AccessDenied:
      return { message: "The machine refused access to this account.", action: "Try again" };
    case IronErrorKind.NegotiationFailure:
      return { message: "The machine refused the connection's security settings.", action: "Try again", detail };
    case IronErrorKind.ProxyConnect:
      return { message: "Could not reach the bastion's remote desktop gateway.", action: "Try again", detail };
    case IronErrorKind.RDCleanPath: {
      const d = err.rdcleanpathDetails();
      const status = d?.httpStatusCode;
      if (status === 401) return { message: "This connection link has expired. Open the machine again from the portal." };
      if (status === 403) return { message: "The bastion refused this connection." };
      if (status === 429 || status === 503) return { message: "The bastion is busy. Try again in a few minutes.", action: "Try again" };
      if (d?.wsaErrorCode !== undefined) return { message: "The bastion could not reach the machine.", action: "Try again", detail };
      if (d?.tlsAlertCode !== undefined) return { message: "The TLS handshake between the bastion and the machine failed.", action: "Try again", detail };
      return { message: "The bastion could not open the connection.", action: "Try again", detail };
    }
    default:
      return connected
        ? { message: "The connection to the desktop was lost.", action: "Reconnect", detail }
        : { message: "The connection to the desktop failed.", action: "Try again", detail };
  }
}

/** describe is a short technical account of an error, for the end panel's detail line. */
function describe(err: unknown): string {
  let text: string;
  if (isIronError(err)) text = err.backtrace();
  else if (err instanceof Error) text = err.message;
  else text = String(err);
  text = text.trim();
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}
