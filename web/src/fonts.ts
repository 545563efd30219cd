/** The system's monospace fonts: the pages download none. */
export const monospace = 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", "Cascadia Mono", Menlo, Consolas, monospace';
