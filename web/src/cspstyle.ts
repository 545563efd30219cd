// A stand-in for the <style> elements xterm.js creates, which a CSP of
// style-src 'self' refuses. build.mjs rewrites xterm's createElement("style")
// into createElement("bastion-style"); this element keeps what xterm writes
// to its textContent in a constructed stylesheet, adopted by the document
// while the element is connected. Constructed stylesheets are CSSOM, which
// CSP does not govern, so the page keeps style-src 'self'.

class ConstructedStyle extends HTMLElement {
  readonly #sheet = new CSSStyleSheet();
  #css = "";

  override get textContent(): string {
    return this.#css;
  }

  override set textContent(css: string | null) {
    this.#css = css ?? "";
    this.#sheet.replaceSync(this.#css);
  }

  connectedCallback(): void {
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, this.#sheet];
  }

  disconnectedCallback(): void {
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== this.#sheet);
  }
}

customElements.define("bastion-style", ConstructedStyle);
