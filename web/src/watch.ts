// Entry point of an auditor's live view of a terminal (GET /watch/{id} for an
// SSH session). The server renders <div id="watch" data-session data-protocol
// data-user data-target>; this module shows the terminal read-only, from
// /ws/watch/ID in the bastion-watch.v1 protocol (proxy/webssh/watch.go): a
// hello, the terminal's size, its output (from a catch-up of the last 64 KiB
// on), and an end. Nothing is ever sent: the terminal takes no input, and the
// bastion drops whatever a watcher's socket carries anyway.
import "./cspstyle"; // before any Terminal exists: see build.mjs
import { Unicode11Addon } from "@xterm/addon-unicode11";
import { Terminal } from "@xterm/xterm";
import { h } from "./dom";
import { monospace } from "./fonts";

const subprotocol = "bastion-watch.v1";

/** The page's state, in #watch's data-state for the browser tests. */
type State = "connecting" | "watching" | "ended";

interface WatchMessage {
  type: string;
  cols?: number;
  rows?: number;
  message?: string;
  reason?: string;
}

function startWatch(root: HTMLElement): void {
  const id = root.dataset.session ?? "";
  const status = h("p", { className: "status", attrs: { role: "status" } });
  const screen = h("div", { className: "terminal", attrs: { "aria-label": "Watched terminal" } });
  root.replaceChildren(status, screen);
  const setState = (state: State, text: string) => {
    root.dataset.state = state;
    status.textContent = text;
  };
  // Not fitted to the window: the output is laid out for the watched
  // terminal's size, which the bastion sends. No input handler: a
  // watcher's keys go nowhere.
  const term = new Terminal({
    fontFamily: monospace,
    fontSize: 14,
    disableStdin: true,
    scrollback: 5000,
    allowProposedApi: true, // for the unicode11 widths
    theme: { background: "#10151b" },
  });
  term.loadAddon(new Unicode11Addon());
  term.unicode.activeVersion = "11";
  term.open(screen);
  const view = { term };
  setState("connecting", "Connecting…");
  const ws = new WebSocket(`wss://${location.host}/ws/watch/${encodeURIComponent(id)}`, subprotocol);
  ws.binaryType = "arraybuffer";
  let ended = false;
  ws.addEventListener("message", (e: MessageEvent<string | ArrayBuffer>) => {
    if (typeof e.data !== "string") {
      view.term.write(new Uint8Array(e.data));
      return;
    }
    let msg: WatchMessage;
    try {
      msg = JSON.parse(e.data) as WatchMessage;
    } catch {
      return;
    }
    switch (msg.type) {
      case "hello":
        setState("watching", "Watching, read-only");
        break;
      case "size":
        // The watched terminal's size, not the window's: the output is laid out for it.
        if (msg.cols && msg.rows) view.term.resize(msg.cols, msg.rows);
        break;
      case "end":
        ended = true;
        setState("ended", msg.message ?? "The session ended.");
        break;
    }
  });
  ws.addEventListener("close", () => {
    if (!ended) setState("ended", "The connection to the bastion was lost, or you may not watch this session. Reload to try again.");
  });
}

const root = document.getElementById("watch");
if (root?.dataset.protocol === "ssh") startWatch(root);
