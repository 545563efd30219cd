// The client pages' frame: a header with the target, the session's state
// and the page's tools, and a stage holding the screen (the terminal or the
// remote desktop), with over it the idle warning banner, the sign-in panel
// and the end-of-session overlay. Nothing that comes and goes changes the
// screen's size.
import { h } from "./dom";

export interface EndAction {
  label: string;
  run(): void;
}

export interface LayoutOptions {
  target: string;
  /** The protocol's name in the header: "SSH", "RDP". */
  protocol: string;
  /** The screen's class ("terminal", "desktop") and its name for assistive technology. */
  screen: { className: string; label: string };
  /** Buttons of the page's own, in the header before Disconnect. */
  tools?: HTMLElement[];
  onDisconnect(): void;
}

export class Layout {
  /** Where the terminal or the desktop lives; it keeps its size while hidden so that it can be measured. */
  readonly screen: HTMLDivElement;
  readonly #status = h("span", { className: "status", attrs: { role: "status" } });
  readonly #recorded = h("span", {
    className: "badge recorded",
    hidden: true,
    textContent: "Recorded",
    title: "The output of this session is recorded",
  });
  readonly #noClipboard = h("span", {
    className: "badge",
    hidden: true,
    textContent: "Copy and paste disabled by policy",
  });
  /** Who watches the session live (an auditor's live view): always in sight while anyone does. */
  readonly #watched = h("span", { className: "badge watched", hidden: true, attrs: { role: "status", "aria-live": "polite" } });
  readonly #disconnect = h("button", { type: "button", className: "disconnect", textContent: "Disconnect", disabled: true });
  readonly #banner = h("div", { className: "banner", hidden: true, attrs: { role: "alert" } });
  readonly #panel = h("div", { className: "panel", hidden: true });
  readonly #overlay = h("div", {
    className: "overlay",
    hidden: true,
    attrs: { role: "alertdialog", "aria-modal": "true", "aria-labelledby": "client-end-message" },
  });
  #countdown = 0;

  constructor(root: HTMLElement, opts: LayoutOptions) {
    this.screen = h("div", { className: `${opts.screen.className} concealed`, attrs: { "aria-label": opts.screen.label } });
    this.#disconnect.addEventListener("click", () => opts.onDisconnect());
    root.replaceChildren(
      h(
        "header",
        { className: "bar" },
        h("h1", { textContent: opts.target }),
        h("span", { className: "protocol", textContent: opts.protocol }),
        this.#status,
        this.#recorded,
        this.#noClipboard,
        this.#watched,
        ...(opts.tools ?? []),
        this.#disconnect,
      ),
      h("div", { className: "stage" }, this.screen, this.#banner, this.#panel, this.#overlay),
    );
  }

  status(text: string): void {
    this.#status.textContent = text;
  }

  /** session shows what hello said about the session. */
  session(info: { recorded: boolean; clipboard: boolean }): void {
    this.#recorded.hidden = !info.recorded;
    this.#noClipboard.hidden = info.clipboard;
  }

  /** watchers shows who watches the session live; an empty list hides the banner. */
  watchers(names: string[]): void {
    this.#watched.hidden = names.length === 0;
    this.#watched.textContent = watchingText(names);
  }

  canDisconnect(enabled: boolean): void {
    this.#disconnect.disabled = !enabled;
  }

  /** noteClipboardRefused draws the eye to the policy note after a blocked copy or paste. */
  noteClipboardRefused(): void {
    this.#noClipboard.classList.remove("flash");
    void this.#noClipboard.offsetWidth; // restart the animation
    this.#noClipboard.classList.add("flash");
  }

  showScreen(shown: boolean): void {
    this.screen.classList.toggle("concealed", !shown);
  }

  /** showPanel puts a form over the stage and focuses its first control. */
  showPanel(content: HTMLElement): void {
    this.#panel.replaceChildren(content);
    this.#panel.hidden = false;
    (content.querySelector<HTMLElement>("[autofocus]") ?? content.querySelector<HTMLElement>("input, select, textarea, button"))?.focus();
  }

  hidePanel(): void {
    this.#panel.hidden = true;
    this.#panel.replaceChildren();
  }

  /** idleWarning shows a countdown to the end of an idle session. */
  idleWarning(seconds: number): void {
    this.clearIdleWarning();
    const end = Date.now() + seconds * 1000;
    // The alert is read out once; the seconds then tick silently.
    const left = h("span", { attrs: { "aria-live": "off" } });
    const tick = () => {
      left.textContent = String(Math.max(0, Math.ceil((end - Date.now()) / 1000)));
    };
    tick();
    this.#banner.replaceChildren("No activity: this session ends in ", left, " s. Press a key to keep it open.");
    this.#banner.hidden = false;
    this.#countdown = window.setInterval(tick, 1000);
  }

  clearIdleWarning(): void {
    window.clearInterval(this.#countdown);
    this.#banner.hidden = true;
  }

  /** ended covers the stage with a message, the actions that make sense, and the way back to the portal. */
  ended(message: string, actions: EndAction[], detail?: string): void {
    this.clearIdleWarning();
    this.hidePanel();
    this.canDisconnect(false);
    this.status("Ended");
    const buttons = actions.map((a) => {
      const b = h("button", { type: "button", textContent: a.label });
      b.addEventListener("click", () => {
        b.disabled = true;
        a.run();
      });
      return b;
    });
    const box = h("div", { className: "box" }, h("p", { className: "message", id: "client-end-message", textContent: message }));
    if (detail) box.append(h("p", { className: "detail", textContent: detail }));
    box.append(h("div", { className: "actions" }, ...buttons, h("a", { href: "/", textContent: "Back to the machines" })));
    this.#overlay.replaceChildren(box);
    this.#overlay.hidden = false;
    (buttons[0] ?? box.querySelector("a"))?.focus();
  }

  clearEnded(): void {
    this.#overlay.hidden = true;
    this.#overlay.replaceChildren();
  }
}

/** watchingText is the banner's sentence: "carol is watching this session". */
export function watchingText(names: string[]): string {
  const unique = [...new Set(names)];
  if (unique.length === 0) return "";
  if (unique.length === 1) return `${unique[0]} is watching this session`;
  return `${unique.slice(0, -1).join(", ")} and ${unique[unique.length - 1]} are watching this session`;
}
