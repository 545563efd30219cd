// Text from input methods and compose sequences, on the desktop.
//
// An input method (Chinese, Japanese, Korean...) and, on some systems, the
// compose key build text only in an editable element, and the desktop is a
// canvas: there the keys reach the machine one by one as the keys pressed,
// and the text the input method would have made never exists. So in
// unicode mode the page keeps the focus on a text area of its own inside
// the component: invisible, at the desktop's top-left corner (where the
// input method shows its candidates), under the mouse's way. The component
// still sees every key: it listens on the window and asks only that the
// focus be inside its element. While a composition is under way its keys
// are kept from the component; the text it commits goes to the machine as
// the characters it is made of (RDP unicode events, one per UTF-16 unit, as
// Windows sends characters beyond the Basic Multilingual Plane).

/** Composer is the desktop's text area for input methods. */
export class Composer {
  readonly #area: HTMLTextAreaElement;
  #on = false;

  /** The text area goes at the end of host's shadow root (the component's first element stays first). */
  constructor(host: HTMLElement) {
    const area = document.createElement("textarea");
    area.setAttribute("aria-label", "Keyboard input for the remote desktop");
    area.setAttribute("autocomplete", "off");
    area.setAttribute("autocapitalize", "off");
    area.spellcheck = false;
    area.tabIndex = -1;
    // CSSOM, which the page's Content-Security-Policy allows (a style attribute it would not).
    Object.assign(area.style, {
      position: "absolute",
      left: "0",
      top: "0",
      width: "1px",
      height: "1px",
      margin: "0",
      padding: "0",
      border: "0",
      opacity: "0",
      resize: "none",
      overflow: "hidden",
      pointerEvents: "none",
    });
    const keys = (e: KeyboardEvent) => {
      // A key the input method takes (keyCode 229: "Process") is part of
      // the composition, not a key for the machine.
      if (e.isComposing || e.keyCode === 229) e.stopPropagation();
    };
    area.addEventListener("keydown", keys);
    area.addEventListener("keyup", keys);
    area.addEventListener("compositionend", (e) => {
      send(e.data);
      area.value = "";
    });
    area.addEventListener("input", (e) => {
      // Keys typed outside a composition went to the machine as keys; the
      // area keeps nothing.
      if (!(e as InputEvent).isComposing) area.value = "";
    });
    this.#area = area;
    const root = host.shadowRoot;
    root?.append(area);
    // A click on the desktop focuses its canvas: the focus moves on to the area.
    root?.addEventListener("focusin", (e) => {
      if (this.#on && e.target !== area) area.focus({ preventScroll: true });
    });
  }

  /**
   * on says whether the area takes the focus: in unicode mode. Turned off,
   * the area may keep the focus until the next click: keys pass it as they
   * pass the canvas.
   */
  set on(on: boolean) {
    this.#on = on;
  }

  /** focus gives the area the focus if it takes it, and says whether it did. */
  focus(): boolean {
    if (!this.#on || !this.#area.isConnected) return false;
    this.#area.focus({ preventScroll: true });
    return true;
  }
}

/**
 * send types text on the desktop: a key down and up per UTF-16 unit, as the
 * component turns a key whose KeyboardEvent.key is one character into a
 * unicode event (the page's own events, on the window, where it listens).
 */
function send(text: string): void {
  for (let i = 0; i < text.length; i++) {
    const unit = text[i];
    for (const type of ["keydown", "keyup"]) {
      window.dispatchEvent(new KeyboardEvent(type, { key: unit, bubbles: true, cancelable: true }));
    }
  }
}
