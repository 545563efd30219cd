// An auditor's live view of a remote desktop (GET /watch/{id} for an RDP
// session), started by the desktop bundle (desktop.ts). The server renders
// <div id="watch" data-session data-protocol="rdp" data-width data-height>.
// The desktop is drawn by the same IronRDP client as a recording's player
// (rdpplayer.ts), connected to /ws/watch/ID, where the bastion plays the
// live session's server side to it (webrdp.Watch): the connection's start,
// then its latest updates, then what comes. The screen takes no pointer
// events, and whatever the client sends is dropped by the bastion.
import { displayControl } from "@devolutions/iron-remote-desktop-rdp";
import { h } from "./dom";
import { loadBackend, RemoteDesktop } from "./remotedesktop";

/** The page's state, in #watch's data-state for the browser tests. */
type State = "connecting" | "watching" | "ended" | "failed";

declare global {
  interface Window {
    /** The canvas the watched desktop is drawn into, for the browser tests. */
    bastionDesktopCanvas?: () => HTMLCanvasElement | null;
  }
}

export async function startDesktopWatch(root: HTMLElement): Promise<void> {
  const id = root.dataset.session ?? "";
  const width = Number(root.dataset.width) || 1024;
  const height = Number(root.dataset.height) || 768;
  const screen = h("div", { className: "screen", attrs: { "aria-label": "Watched desktop" } });
  // The desktop keeps the watched proportions; CSSOM, not a style attribute (CSP).
  screen.style.aspectRatio = `${width} / ${height}`;
  const status = h("p", { className: "status", attrs: { role: "status" } });
  root.replaceChildren(status, screen);
  const setState = (state: State, text: string) => {
    root.dataset.state = state;
    status.textContent = text;
  };
  setState("connecting", "Connecting…");
  let desktop: RemoteDesktop;
  try {
    await loadBackend();
    // The watched client's channels: the clipboard's if it asked for one.
    const clipboard = root.dataset.clipboard === "true";
    desktop = await RemoteDesktop.mount(screen, { clipboard, channelOnly: true, warning: () => {} });
  } catch (err) {
    setState("failed", `The desktop client could not start in this browser: ${String(err)}`);
    return;
  }
  window.bastionDesktopCanvas = () => desktop.canvas();
  try {
    const builder = desktop.api
      .configBuilder()
      .withDestination("watch")
      .withProxyAddress(`wss://${location.host}/ws/watch/${encodeURIComponent(id)}`)
      .withAuthToken("watch")
      .withUsername("watch")
      .withPassword("watch")
      .withDesktopSize({ width, height })
      // As the watched client asks: the server's answers list the channels it asked for.
      .withExtension(displayControl(true));
    const session = await desktop.api.connect(builder.build());
    desktop.api.setVisibility(true);
    desktop.fit();
    setState("watching", "Watching, read-only");
    let why = "";
    try {
      why = (await session.run()).reason();
    } catch (err) {
      why = describe(err);
    }
    root.dataset.reason = why;
    setState("ended", "The session ended, or this page fell behind it. Reload to watch again if it goes on.");
  } catch (err) {
    root.dataset.reason = describe(err);
    setState("failed", `The session could not be watched: ${describe(err)}`);
  }
}

function describe(err: unknown): string {
  const e = err as { backtrace?: () => string };
  const text = typeof e?.backtrace === "function" ? e.backtrace() : err instanceof Error ? err.message : String(err);
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}
