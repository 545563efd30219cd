// Symbol.dispose, from TypeScript's lib esnext.disposable, which
// tsconfig.json does not include: the typings of
// @devolutions/iron-remote-desktop-rdp (wasm-bindgen classes) name it. The
// pages never use it.
interface SymbolConstructor {
  readonly dispose: unique symbol;
}
