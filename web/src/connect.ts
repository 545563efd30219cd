// Entry point of the connect page (GET /connect/{ticket}). The server renders
// <div id="client" data-ticket data-protocol data-target data-csrf>; this
// module turns it into the client for that protocol.
import { startSSH } from "./ssh";

const root = document.getElementById("client");
if (root) {
  const { ticket = "", protocol = "", target = "", csrf = "" } = root.dataset;
  if (protocol === "ssh") {
    startSSH(root, { ticket, target, csrf });
  } else {
    root.textContent = `This page cannot open ${protocol || "this kind of"} connection yet.`;
  }
}
