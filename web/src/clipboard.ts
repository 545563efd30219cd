// Copy and paste under the session's clipboard policy (hello.clipboard).
//
// Pasted text goes to the server as a "paste" message, never as keystrokes,
// so that the server can apply the policy too. xterm.js has its own paste
// handling (a listener on its textarea that feeds onData); the listeners
// here run first, in the capture phase on an ancestor, and stop the event.
// Dropped text is treated like pasted text: it would otherwise reach the
// textarea and be typed.
import type { Terminal } from "@xterm/xterm";

export interface ClipboardHooks {
  /** paste sends text, already prepared for the terminal's modes. */
  paste(text: string): void;
  /** refused tells the user that the policy blocked a copy or a paste. */
  refused(): void;
  /** failed tells the user that the browser did not let the page use the clipboard. */
  failed(message: string): void;
}

export class Clipboard {
  /** allowed is the current session's policy; nothing passes until hello says so. */
  allowed = false;
  readonly #term: Terminal;
  readonly #hooks: ClipboardHooks;

  constructor(host: HTMLElement, term: Terminal, hooks: ClipboardHooks) {
    this.#term = term;
    this.#hooks = hooks;
    const capture = { capture: true };
    host.addEventListener("paste", (e) => this.#received(e, e.clipboardData), capture);
    host.addEventListener("drop", (e) => this.#received(e, e.dataTransfer), capture);
    host.addEventListener("dragover", (e) => e.preventDefault(), capture);
    for (const type of ["copy", "cut"] as const) {
      host.addEventListener(type, (e) => this.#copyEvent(e), capture);
    }
    host.addEventListener("contextmenu", (e) => this.#rightClick(e));
    term.attachCustomKeyEventHandler((e) => this.#key(e));
  }

  #received(e: Event, data: DataTransfer | null): void {
    e.preventDefault();
    e.stopPropagation();
    if (!this.allowed) {
      this.#hooks.refused();
      return;
    }
    this.#paste(data?.getData("text/plain") ?? "");
  }

  // When allowed, xterm.js puts the selection in the clipboard itself.
  #copyEvent(e: ClipboardEvent): void {
    if (this.allowed) return;
    e.preventDefault();
    e.stopPropagation();
    e.clipboardData?.clearData();
    this.#hooks.refused();
  }

  // Right-click copies the selection if there is one, and pastes otherwise
  // (as in PuTTY and Windows Terminal). Without the clipboard the browser's
  // own menu stays, and its Paste meets the paste listener.
  #rightClick(e: MouseEvent): void {
    if (!this.allowed) return;
    e.preventDefault();
    if (this.#term.hasSelection()) {
      this.#copySelection();
      this.#term.clearSelection();
      return;
    }
    navigator.clipboard.readText().then(
      (text) => this.#paste(text),
      () => this.#hooks.failed("The browser did not let the page read the clipboard: paste with Ctrl+Shift+V."),
    );
  }

  // Ctrl+Shift+C copies the selection. Ctrl+Shift+V is left to the browser,
  // whose paste event arrives at the paste listener; xterm.js must not type
  // either key.
  #key(e: KeyboardEvent): boolean {
    if (!e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return true;
    const key = e.key.toLowerCase();
    if (key !== "c" && key !== "v") return true;
    if (e.type === "keydown") {
      if (key === "c") {
        e.preventDefault();
        this.#copySelection();
      } else if (!this.allowed) {
        e.preventDefault();
        this.#hooks.refused();
      }
    }
    return false;
  }

  #copySelection(): void {
    if (!this.allowed) {
      this.#hooks.refused();
      return;
    }
    const text = this.#term.getSelection();
    if (!text) return;
    navigator.clipboard.writeText(text).catch(() => this.#hooks.failed("The browser did not let the page write to the clipboard."));
  }

  // The text is prepared as xterm.js would type it: newlines as carriage
  // returns, and wrapped when the application asked for bracketed paste.
  // Bracket markers inside the text are dropped so that it cannot end the
  // bracket early and have the rest run as typed commands.
  #paste(text: string): void {
    if (!text) return;
    const body = text.replace(/\x1b\[20[01]~/g, "").replace(/\r?\n/g, "\r");
    this.#hooks.paste(this.#term.modes.bracketedPasteMode ? `\x1b[200~${body}\x1b[201~` : body);
  }
}
