// Small helpers for building the page with plain DOM calls. Nothing here
// writes HTML strings or style attributes: the page runs under a strict CSP.

type Props<K extends keyof HTMLElementTagNameMap> = Partial<Omit<HTMLElementTagNameMap[K], "style">> & {
  /** Attributes that have no matching property, such as aria-* and role. */
  attrs?: Record<string, string>;
};

/** h creates an element, assigns its properties and appends its children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props<K> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  const { attrs, ...rest } = props;
  Object.assign(el, rest);
  for (const [name, value] of Object.entries(attrs ?? {})) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

/** field wraps a control in a label with its caption. */
export function field(caption: string, control: HTMLElement, hint?: string): HTMLLabelElement {
  const label = h("label", { className: "field" }, h("span", { textContent: caption }), control);
  if (hint) label.append(h("small", { textContent: hint }));
  return label;
}
