// A stand-in for the <style> elements that xterm.js and the remote desktop
// component (a Svelte custom element) create, which a CSP of style-src
// 'self' refuses. build.mjs rewrites their createElement("style") into
// createElement("bastion-style"); this element keeps what they write to its
// textContent in a constructed stylesheet, adopted while the element is
// connected by the tree it is in: the document, or the shadow root of the
// component that appended it. Constructed stylesheets are CSSOM, which CSP
// does not govern, so the pages keep style-src 'self'.

class ConstructedStyle extends HTMLElement {
  readonly #sheet = new CSSStyleSheet();
  #css = "";
  /** The tree that adopted the sheet, while connected. */
  #root: Document | ShadowRoot | undefined;

  override get textContent(): string {
    return this.#css;
  }

  override set textContent(css: string | null) {
    this.#css = css ?? "";
    this.#sheet.replaceSync(this.#css);
  }

  connectedCallback(): void {
    const root = this.getRootNode();
    if (!(root instanceof Document || root instanceof ShadowRoot)) return;
    this.#root = root;
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, this.#sheet];
  }

  disconnectedCallback(): void {
    const root = this.#root;
    this.#root = undefined;
    if (root) root.adoptedStyleSheets = root.adoptedStyleSheets.filter((s) => s !== this.#sheet);
  }
}

customElements.define("bastion-style", ConstructedStyle);
