// The remote desktop component, <iron-remote-desktop> from
// @devolutions/iron-remote-desktop, with the RDP backend of
// @devolutions/iron-remote-desktop-rdp (WebAssembly, inline as a data: URL:
// the page needs script-src 'wasm-unsafe-eval' and connect-src data:).
//
// The component is a Svelte custom element with an open shadow root holding
// the canvas it draws into. It announces itself with a "ready" event whose
// detail carries its API (UserInteraction); the clipboard must be configured
// in that event's handler, before the component starts its clipboard
// service. One element serves one connection: removing it ends the
// component's listeners and its clipboard polling.
import "@devolutions/iron-remote-desktop";
import type { IronError, UserInteraction } from "@devolutions/iron-remote-desktop";
import { Backend, init } from "@devolutions/iron-remote-desktop-rdp";

import { Composer } from "./composer";

/**
 * IronErrorKind mirrors the enum of iron-remote-desktop's typings, which
 * the package declares but does not export at run time.
 */
export const IronErrorKind = {
  General: 0,
  WrongPassword: 1,
  LogonFailure: 2,
  AccessDenied: 3,
  RDCleanPath: 4,
  ProxyConnect: 5,
  NegotiationFailure: 6,
} as const;

/** The component's scale modes; only Fit is used: the desktop, whole, as large as the room allows. */
const scaleFit = 1 as Parameters<UserInteraction["setScale"]>[0];

let backend: Promise<void> | undefined;

/**
 * loadBackend compiles the RDP backend's WebAssembly, once per page. Its
 * log goes to the console at warning level and above: the debug level would
 * log the RDCleanPath request, ticket included.
 */
export function loadBackend(): Promise<void> {
  backend ??= init("WARN");
  return backend;
}

export interface DesktopHooks {
  /** clipboard shares text (and images) both ways; false leaves the clipboard off altogether. */
  clipboard: boolean;
  /**
   * channelOnly asks for the clipboard channel (with clipboard) and leaves
   * the local clipboard alone: for a player or a watcher, whose client must
   * ask for the channels the recorded or watched client asked for (the
   * server's channel IDs follow that list) and must not copy a thing.
   */
  channelOnly?: boolean;
  /** warning receives the component's warnings, all about the clipboard today. */
  warning(message: string): void;
}

type IronRemoteDesktop = HTMLElement & { module: unknown };

/** RemoteDesktop is one <iron-remote-desktop> element, mounted and ready to connect. */
export class RemoteDesktop {
  readonly element: IronRemoteDesktop;
  readonly api: UserInteraction;
  readonly #composer: Composer;

  private constructor(element: IronRemoteDesktop, api: UserInteraction) {
    this.element = element;
    this.api = api;
    this.#composer = new Composer(element);
  }

  /** mount adds a new component to host and resolves once it is ready. */
  static mount(host: HTMLElement, hooks: DesktopHooks): Promise<RemoteDesktop> {
    const el = document.createElement("iron-remote-desktop") as IronRemoteDesktop;
    el.setAttribute("scale", "fit");
    el.setAttribute("flexcenter", "true");
    el.setAttribute("verbose", "false");
    el.module = Backend;
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(() => {
        el.remove();
        reject(new Error("the remote desktop component did not start"));
      }, 10_000);
      el.addEventListener(
        "ready",
        (e) => {
          window.clearTimeout(timer);
          const api = (e as CustomEvent<{ irgUserInteraction: UserInteraction }>).detail.irgUserInteraction;
          configureClipboard(api, hooks);
          const desktop = new RemoteDesktop(el, api);
          if (hooks.clipboard) void clipboardSettled().then(() => resolve(desktop));
          else resolve(desktop);
        },
        { once: true },
      );
      host.replaceChildren(el);
    });
  }

  /** canvas is the element the desktop is drawn into. */
  canvas(): HTMLCanvasElement | null {
    return this.element.shadowRoot?.querySelector("canvas") ?? null;
  }

  /** fit scales the desktop to the room the element has. */
  fit(): void {
    this.api.setScale(scaleFit);
  }

  focus(): void {
    if (!this.#composer.focus()) this.element.focus({ preventScroll: true });
  }

  /**
   * setUnicode chooses how keys reach the machine (keyboard.ts): unicode
   * also lets input methods compose text on the desktop (composer.ts).
   */
  setUnicode(unicode: boolean): void {
    this.api.setKeyboardUnicodeMode(unicode);
    this.#composer.on = unicode;
  }

  remove(): void {
    this.element.remove();
  }
}

// The component syncs the clipboard by itself ("auto" mode): it polls the
// local clipboard while the page has the focus and sends what changed, and
// writes what the desktop copies. If the browser refuses to let it read, it
// falls back to announcing remote copies, which are then written here.
// Without the clipboard, neither the polling nor the RDP clipboard channel
// is set up.
function configureClipboard(api: UserInteraction, hooks: DesktopHooks): void {
  api.setEnableClipboard(hooks.clipboard);
  // Manual mode with no handler: what the desktop copies is announced, and
  // nothing takes it; nothing local is read.
  api.setEnableAutoClipboard(hooks.clipboard && !hooks.channelOnly);
  if (!hooks.clipboard || hooks.channelOnly) return;
  api.onWarningCallback((message) => hooks.warning(message));
  api.onClipboardRemoteUpdateCallback(() => {
    api.saveRemoteClipboardData().catch(() => hooks.warning("The browser did not let the page write to the clipboard."));
  });
}

// The component sets its clipboard up after its ready event, and not at
// once: it first asks the browser whether the page may read the clipboard.
// A session it connects before that is done asks the machine for no
// clipboard channel at all (IronRDP opens cliprdr only if the clipboard's
// callbacks are there at connect), so the page waits: the component's
// question was asked before ours, and is answered first.
async function clipboardSettled(): Promise<void> {
  const nextTask = () => new Promise<void>((resolve) => window.setTimeout(resolve, 0));
  await nextTask(); // the component's set-up starts: it was queued behind the ready event
  try {
    await navigator.permissions?.query({ name: "clipboard-read" as PermissionName });
  } catch {
    // Browsers without that permission: the component reads the clipboard to find out instead.
  }
  await nextTask(); // and ends, its answer in hand
}

/** isIronError tells the errors of the RDP backend from others (a thrown Error, a bug). */
export function isIronError(err: unknown): err is IronError {
  return typeof err === "object" && err !== null && typeof (err as IronError).kind === "function";
}
