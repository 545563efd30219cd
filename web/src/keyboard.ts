// The desktop's keyboard: how keys reach the machine.
//
// Unicode mode (the default) sends the characters keys make (RDP's unicode
// keyboard events), so that the browser's own layout decides: a French or
// German keyboard types é, ß, € and @ on a machine set to US English. Only
// keys that make no character (Enter, arrows, F-keys) and the modifiers go
// as scancodes. Scancode mode sends every key as its position on the
// keyboard and leaves the layout to the machine: games and shortcuts that
// care where a key is, or a machine whose layout matches the user's.
//
// The user's choice is remembered per browser (localStorage).
//
// AltGr: iron-remote-desktop 0.11 sends a key held with AltGraph as a
// scancode (RDP defines no unicode shortcuts), together with the Right Alt
// it saw go down, so AltGr+Q on a German keyboard would reach the machine
// as Alt+Q. In unicode mode AltGr only chooses the character, which the
// browser has already worked out (KeyboardEvent.key), so the page keeps
// AltGr itself from the component and hands it the key as the plain
// character it makes. Dead keys need nothing: the component ignores the
// dead key, and the next keydown carries the composed character.

/** The two ways keys reach the machine. */
export type KeyboardMode = "unicode" | "scancodes";

const storageKey = "bastiond.desktop.keyboard";

/** savedKeyboardMode is the mode this browser used last: unicode unless scancodes was chosen. */
export function savedKeyboardMode(): KeyboardMode {
  try {
    return window.localStorage.getItem(storageKey) === "scancodes" ? "scancodes" : "unicode";
  } catch {
    return "unicode"; // storage refused (a privacy setting): the default
  }
}

/** saveKeyboardMode remembers mode for the next desktop in this browser. */
export function saveKeyboardMode(mode: KeyboardMode): void {
  try {
    if (mode === "unicode") window.localStorage.removeItem(storageKey);
    else window.localStorage.setItem(storageKey, mode);
  } catch {
    // Not remembered; the choice still holds for this page.
  }
}

/**
 * holdAltGr installs, once per page, the AltGr handling described above. It
 * acts only while unicodeTarget returns the element that has the focus (the
 * desktop, in unicode mode); elsewhere (the sign-in form, scancode mode)
 * keys pass untouched.
 */
export function holdAltGr(unicodeTarget: () => Element | undefined): void {
  const onKey = (e: KeyboardEvent) => {
    if (!e.isTrusted) return; // our own re-dispatch, below
    const target = unicodeTarget();
    if (!target || document.activeElement !== target) return;
    if (e.key === "AltGraph") {
      // Capturing on window runs before the component's listener (window,
      // bubbling); stopping here keeps AltGr from the machine.
      e.stopPropagation();
      e.preventDefault();
      return;
    }
    if (!e.getModifierState("AltGraph") || !isCharacter(e.key)) return;
    e.stopPropagation();
    e.preventDefault();
    // The same key without the modifiers AltGr reports (AltGraph, and on
    // Windows Control and Alt): the component sends its character.
    window.dispatchEvent(
      new KeyboardEvent(e.type, {
        key: e.key,
        code: e.code,
        location: e.location,
        repeat: e.repeat,
        shiftKey: e.shiftKey,
        bubbles: true,
        cancelable: true,
      }),
    );
  };
  window.addEventListener("keydown", onKey, true);
  window.addEventListener("keyup", onKey, true);
}

/** isCharacter tells a key that makes one character ("@", "€", "中") from a named key ("Enter", "Dead"). */
export function isCharacter(key: string): boolean {
  return [...key].length === 1;
}
