// Bundles src/ into dist/ for go:embed: one minified ES module and one
// stylesheet per page, nothing fetched at run time. Run by `npm run build`
// after `tsc --noEmit` has type-checked the sources.
import { readFile, readdir, rm, stat } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const dist = "dist";

// Some dependencies write styles in ways that a CSP of style-src 'self'
// blocks: <style> elements and style attributes set with setAttribute. These
// rewrites send the rules to a constructed stylesheet (src/cspstyle.ts) and
// the inline styles through the CSSOM, which CSP does not govern. Each must
// match exactly as often as stated, and each patched module must be part of
// the build, so that an upgrade that changes the code fails the build
// instead of the page.
const patchedModules = [
  {
    // xterm.js 6: theme and layout rules in <style> elements, truecolor cells
    // in style attributes.
    name: "@xterm/xterm",
    filter: /[\\/]@xterm[\\/]xterm[\\/]lib[\\/]xterm\.mjs$/,
    patches: [
      { find: 'createElement("style")', replace: 'createElement("bastion-style")', count: 3 },
      {
        find: 't.setAttribute("style",`${t.getAttribute("style")||""}${e};`)',
        replace: "t.style.cssText+=`${e};`",
        count: 1,
      },
    ],
  },
  {
    // iron-remote-desktop 0.11 (Svelte 5): the component's scoped rules in a
    // <style> element appended to its shadow root, and the sizes of the
    // canvas's wrappers in style attributes (Svelte's attribute setter).
    name: "@devolutions/iron-remote-desktop",
    filter: /[\\/]@devolutions[\\/]iron-remote-desktop[\\/]iron-remote-desktop\.js$/,
    patches: [
      {
        find: 'const n = document.createElement("style");',
        replace: 'const n = document.createElement("bastion-style");',
        count: 1,
      },
      {
        find: 'typeof i != "string" && gn(t).includes(e) ? t[e] = i : t.setAttribute(e, i)',
        replace: 'typeof i != "string" && gn(t).includes(e) ? t[e] = i : e === "style" ? t.style.cssText = i : t.setAttribute(e, i)',
        count: 1,
      },
    ],
  },
];

const applied = new Set();

const cspCompatible = {
  name: "csp-compatible",
  setup(build) {
    for (const mod of patchedModules) {
      build.onLoad({ filter: mod.filter }, async (args) => {
        let code = await readFile(args.path, "utf8");
        for (const p of mod.patches) {
          const found = code.split(p.find).length - 1;
          if (found !== p.count) {
            throw new Error(`${mod.name} patch: ${JSON.stringify(p.find)} found ${found} times, want ${p.count}`);
          }
          code = code.replaceAll(p.find, p.replace);
        }
        applied.add(mod.name);
        return { contents: code, loader: "js" };
      });
    }
  },
};

for (const name of await readdir(dist).catch(() => [])) {
  if (name !== "README.txt") await rm(`${dist}/${name}`, { recursive: true });
}

// Each page is one script and one stylesheet (no code splitting): the
// terminal page does not download the desktop's WebAssembly, which the
// desktop page carries inline (a data: URL in iron-remote-desktop-rdp).
await esbuild.build({
  entryPoints: ["src/connect.ts", "src/connect.css", "src/passkey.ts", "src/desktop.ts", "src/desktop.css", "src/player.ts", "src/player.css", "src/rdpplayer.css", "src/watch.ts", "src/watch.css"],
  outdir: dist,
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  legalComments: "eof",
  logLevel: "warning",
  plugins: [cspCompatible],
});

for (const mod of patchedModules) {
  if (!applied.has(mod.name)) throw new Error(`${mod.name} patch: the module was not bundled from the expected path`);
}

for (const name of (await readdir(dist)).sort()) {
  const size = (await stat(`${dist}/${name}`)).size;
  const gz = gzipSync(await readFile(`${dist}/${name}`)).length;
  console.log(`${dist}/${name.padEnd(12)} ${(size / 1024).toFixed(1).padStart(7)} KiB  (${(gz / 1024).toFixed(1)} KiB gzip)`);
}
