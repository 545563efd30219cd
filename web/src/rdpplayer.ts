// The RDP recording player (GET /recordings/{id} for a desktop's
// recording), started by the desktop bundle (desktop.ts). The server renders <div id="rdpplayer" data-id
// data-width data-height data-duration data-csrf data-title>. The desktop
// is drawn by the same IronRDP client as a live one (remotedesktop.ts),
// connected to the bastion's replay endpoint, /ws/replay/ID, which plays the
// recorded server's side to it; the client asks for the recorded desktop
// size. Pause, resume and speed go to POST /api/replay/PLAYER; a seek is a
// new connection that starts at the position. The position is read from
// GET /api/replay/PLAYER.
import { displayControl } from "@devolutions/iron-remote-desktop-rdp";
import { h } from "./dom";
import { loadBackend, RemoteDesktop } from "./remotedesktop";

/** The page's state, in #rdpplayer's data-state for the browser tests. */
type State = "connecting" | "playing" | "paused" | "ended" | "failed";

interface PlayerState {
  position: number;
  speed: number;
  paused: boolean;
  ended: boolean;
}

declare global {
  interface Window {
    /** The canvas the recorded desktop is drawn into, for the browser tests. */
    bastionDesktopCanvas?: () => HTMLCanvasElement | null;
  }
}

const speeds = [1, 2, 8];
const pollInterval = 500; // ms

function randomName(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function clock(ms: number): string {
  const s = Math.floor(ms / 1000);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  return hh > 0 ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

class RDPPlayer {
  readonly #root: HTMLElement;
  readonly #id: string;
  readonly #width: number;
  readonly #height: number;
  readonly #duration: number;
  /** The recorded client asked for a clipboard channel: the player's client asks for one too. */
  readonly #clipboard: boolean;
  readonly #csrf: string;
  readonly #name = randomName();
  readonly #screen: HTMLDivElement;
  readonly #play = h("button", { type: "button", className: "play", textContent: "Pause" });
  readonly #seek = h("input", { type: "range", className: "seek", min: "0", step: "100", attrs: { "aria-label": "Position" } });
  readonly #time = h("span", { className: "time" });
  readonly #status = h("p", { className: "status", attrs: { role: "status" } });
  readonly #speedButtons: HTMLButtonElement[];
  #desktop: RemoteDesktop | undefined;
  #attempt = 0;
  #state: State = "connecting";
  #speed = 1;
  #seeking = false;

  constructor(root: HTMLElement) {
    this.#root = root;
    const d = root.dataset;
    this.#id = d.id ?? "";
    this.#width = Number(d.width);
    this.#height = Number(d.height);
    this.#duration = Number(d.duration);
    this.#clipboard = d.clipboard === "true";
    this.#csrf = d.csrf ?? "";
    this.#seek.max = String(this.#duration);
    this.#seek.value = "0";
    this.#speedButtons = speeds.map((s) => {
      const b = h("button", { type: "button", className: "speed", textContent: `${s}×` });
      b.dataset.speed = String(s);
      b.setAttribute("aria-pressed", String(s === this.#speed));
      b.addEventListener("click", () => void this.#setSpeed(s));
      return b;
    });
    this.#screen = h("div", { className: "screen", attrs: { "aria-label": "Recorded desktop" } });
    // The desktop keeps the recorded proportions; CSSOM, not a style attribute (CSP).
    this.#screen.style.aspectRatio = `${this.#width} / ${this.#height}`;
    const bar = h("div", { className: "controls" }, this.#play, this.#seek, this.#time, ...this.#speedButtons);
    root.replaceChildren(bar, this.#screen, this.#status);
    this.#play.addEventListener("click", () => void this.#togglePause());
    this.#seek.addEventListener("input", () => {
      this.#seeking = true;
      this.#showTime(Number(this.#seek.value));
    });
    this.#seek.addEventListener("change", () => {
      this.#seeking = false;
      void this.#connect(Number(this.#seek.value));
    });
    window.bastionDesktopCanvas = () => this.#desktop?.canvas() ?? null;
    this.#showTime(0);
    window.setInterval(() => void this.#poll(), pollInterval);
  }

  #setState(state: State, message = ""): void {
    this.#state = state;
    this.#root.dataset.state = state;
    this.#play.textContent = state === "playing" || state === "connecting" ? "Pause" : "Play";
    this.#status.textContent = message;
  }

  #showTime(ms: number): void {
    this.#time.textContent = `${clock(ms)} / ${clock(this.#duration)}`;
  }

  /** connect plays the recording from position from (ms) in a new client. */
  async #connect(from: number): Promise<void> {
    const attempt = ++this.#attempt;
    this.#setState("connecting", from > 0 ? `Seeking to ${clock(from)}…` : "Starting…");
    this.#desktop?.api.shutdown();
    this.#desktop?.remove();
    this.#desktop = undefined;
    let desktop: RemoteDesktop;
    try {
      await loadBackend();
      desktop = await RemoteDesktop.mount(this.#screen, { clipboard: this.#clipboard, channelOnly: true, warning: () => {} });
    } catch (err) {
      this.#setState("failed", `The desktop client could not start in this browser: ${String(err)}`);
      return;
    }
    if (attempt !== this.#attempt) {
      desktop.remove();
      return;
    }
    this.#desktop = desktop;
    const q = new URLSearchParams({ player: this.#name, from: String(Math.round(from)), speed: String(this.#speed) });
    try {
      const builder = desktop.api
        .configBuilder()
        .withDestination("recording")
        .withProxyAddress(`wss://${location.host}/ws/replay/${encodeURIComponent(this.#id)}?${q}`)
        .withAuthToken("replay")
        .withUsername("replay")
        .withPassword("replay")
        .withDesktopSize({ width: this.#width, height: this.#height })
        .withExtension(displayControl(true));
      const session = await desktop.api.connect(builder.build());
      if (attempt !== this.#attempt) return;
      desktop.api.setVisibility(true);
      desktop.fit();
      this.#setState("playing");
      session.run().catch(() => {});
    } catch (err) {
      if (attempt === this.#attempt) this.#setState("failed", `The recording could not be played: ${describe(err)}`);
    }
  }

  async #poll(): Promise<void> {
    if (this.#state === "failed" || this.#state === "connecting") return;
    let s: PlayerState;
    try {
      const res = await fetch(`/api/replay/${this.#name}`, { credentials: "same-origin", cache: "no-store" });
      if (!res.ok) return;
      s = (await res.json()) as PlayerState;
    } catch {
      return;
    }
    if (!this.#seeking) {
      this.#seek.value = String(s.position);
      this.#showTime(s.position);
    }
    if ((this.#state as State) === "connecting") return;
    if (s.ended) this.#setState("ended", "End of the recording.");
    else if ((this.#state as State) !== "connecting") this.#setState(s.paused ? "paused" : "playing");
  }

  async #control(body: object): Promise<void> {
    const res = await fetch(`/api/replay/${this.#name}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": this.#csrf },
      body: JSON.stringify(body),
    }).catch(() => undefined);
    if (!res?.ok) this.#status.textContent = "The bastion did not accept the command: reload the page.";
  }

  async #togglePause(): Promise<void> {
    switch (this.#state) {
      case "ended":
      case "failed":
        await this.#connect(0);
        return;
      case "paused":
        this.#setState("playing");
        await this.#control({ action: "play" });
        return;
      default:
        this.#setState("paused");
        await this.#control({ action: "pause" });
    }
  }

  async #setSpeed(speed: number): Promise<void> {
    this.#speed = speed;
    for (const b of this.#speedButtons) b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === speed));
    await this.#control({ action: "speed", speed });
  }

  start(): void {
    void this.#connect(0);
  }
}

function describe(err: unknown): string {
  const e = err as { backtrace?: () => string };
  const text = typeof e?.backtrace === "function" ? e.backtrace() : err instanceof Error ? err.message : String(err);
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}

/** startPlayer turns root, the server's <div id="rdpplayer">, into the player. */
export function startPlayer(root: HTMLElement): void {
  new RDPPlayer(root).start();
}
