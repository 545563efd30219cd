// Entry point of the remote desktop page (GET /connect/{ticket} for an RDP
// target). The server renders <div id="client" data-ticket data-protocol
// data-target data-csrf data-clipboard data-file-transfer>; this module turns it into the
// desktop client. The terminal page (connect.ts) is a separate bundle, so
// that it does not download the desktop's WebAssembly. The player of RDP
// recordings (<div id="rdpplayer">, rdpplayer.ts) is in this bundle too:
// one 6 MB download, cached, serves both.
import "./cspstyle"; // before the component creates its styles: see build.mjs
import { startDesktop } from "./rdp";
import { startPlayer } from "./rdpplayer";
import { startDesktopWatch } from "./rdpwatch";

const root = document.getElementById("client");
if (root) {
  const { ticket = "", protocol = "", target = "", csrf = "", clipboard = "", fileTransfer = "" } = root.dataset;
  if (protocol === "rdp") {
    startDesktop(root, { ticket, target, csrf, clipboard: clipboard === "true", files: fileTransfer === "true" });
  } else {
    root.textContent = `This page cannot open ${protocol || "this kind of"} connection.`;
  }
}

const player = document.getElementById("rdpplayer");
if (player) startPlayer(player);

const watched = document.getElementById("watch");
if (watched?.dataset.protocol === "rdp") void startDesktopWatch(watched);
