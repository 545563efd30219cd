// Entry point of the recording player (GET /recordings/{id}). The server
// renders <div id="player" data-cast="/api/recordings/ID.cast" data-title>;
// asciinema-player fetches the cast from the same origin and plays it.
//
// asciinema-player runs its terminal emulator as WebAssembly, so this page
// needs script-src 'wasm-unsafe-eval' (see web/README.md).
import { create } from "asciinema-player";
import { monospace } from "./fonts";

const el = document.getElementById("player");
const cast = el?.dataset.cast;
if (el && cast) {
  if (el.dataset.title) el.setAttribute("aria-label", el.dataset.title);
  create(cast, el, { fit: "width", controls: true, preload: true, terminalFontFamily: monospace });
}
