// The xterm.js terminal, fitted to its host element.
import "./cspstyle"; // before any Terminal exists: see build.mjs
import { FitAddon } from "@xterm/addon-fit";
import { Unicode11Addon } from "@xterm/addon-unicode11";
import { Terminal } from "@xterm/xterm";
import { monospace } from "./fonts";

export interface TerminalEvents {
  /** input is typed keys (and mouse reports), as bytes for the remote side. */
  input(bytes: Uint8Array<ArrayBuffer>): void;
  /** resize reports a new size in cells; it fires only when the size changes. */
  resize(cols: number, rows: number): void;
}

const refitDelay = 100; // ms: a window being dragged resizes many times

export class TerminalView {
  readonly term = new Terminal({
    fontFamily: monospace,
    fontSize: 14,
    cursorBlink: true,
    scrollback: 5000,
    allowProposedApi: true, // for the unicode11 widths
    theme: { background: "#10151b" },
  });
  readonly #fit = new FitAddon();
  #timer = 0;

  constructor(host: HTMLElement, events: TerminalEvents) {
    this.term.loadAddon(this.#fit);
    this.term.loadAddon(new Unicode11Addon());
    this.term.unicode.activeVersion = "11";
    this.term.open(host);
    const utf8 = new TextEncoder();
    this.term.onData((data) => events.input(utf8.encode(data)));
    // onBinary carries mouse reports that are bytes, not UTF-8 text.
    this.term.onBinary((data) => events.input(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => events.resize(cols, rows));
    new ResizeObserver(() => {
      window.clearTimeout(this.#timer);
      this.#timer = window.setTimeout(() => this.fit(), refitDelay);
    }).observe(host);
    this.fit();
  }

  /** fit sizes the terminal to its host now. */
  fit(): void {
    this.#fit.fit();
  }
}
