// Bundles src/ into dist/ for go:embed: one minified ES module and one
// stylesheet per page, nothing fetched at run time. Run by `npm run build`
// after `tsc --noEmit` has type-checked the sources.
import { readFile, readdir, rm, stat } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const dist = "dist";

// xterm.js 6 puts its theme and layout rules in <style> elements and truecolor
// cells in style attributes set with setAttribute; a CSP of style-src 'self'
// blocks both. These rewrites send the rules to a constructed stylesheet
// (src/cspstyle.ts) and the cell colours through the CSSOM, which CSP does
// not govern. Each must match exactly as often as stated, so that an xterm
// upgrade that changes the code fails the build instead of the page.
const xtermPatches = [
  { find: 'createElement("style")', replace: 'createElement("bastion-style")', count: 3 },
  {
    find: 't.setAttribute("style",`${t.getAttribute("style")||""}${e};`)',
    replace: "t.style.cssText+=`${e};`",
    count: 1,
  },
];

const cspCompatibleXterm = {
  name: "csp-compatible-xterm",
  setup(build) {
    build.onLoad({ filter: /[\\/]@xterm[\\/]xterm[\\/]lib[\\/]xterm\.mjs$/ }, async (args) => {
      let code = await readFile(args.path, "utf8");
      for (const p of xtermPatches) {
        const found = code.split(p.find).length - 1;
        if (found !== p.count) {
          throw new Error(`xterm patch: ${JSON.stringify(p.find)} found ${found} times, want ${p.count}`);
        }
        code = code.replaceAll(p.find, p.replace);
      }
      return { contents: code, loader: "js" };
    });
  },
};

for (const name of await readdir(dist).catch(() => [])) {
  if (name !== "README.txt") await rm(`${dist}/${name}`, { recursive: true });
}

await esbuild.build({
  entryPoints: ["src/connect.ts", "src/connect.css", "src/player.ts", "src/player.css"],
  outdir: dist,
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  legalComments: "eof",
  logLevel: "warning",
  plugins: [cspCompatibleXterm],
});

for (const name of (await readdir(dist)).sort()) {
  const size = (await stat(`${dist}/${name}`)).size;
  const gz = gzipSync(await readFile(`${dist}/${name}`)).length;
  console.log(`${dist}/${name.padEnd(12)} ${(size / 1024).toFixed(1).padStart(7)} KiB  (${(gz / 1024).toFixed(1)} KiB gzip)`);
}
