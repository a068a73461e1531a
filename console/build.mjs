// Builds the console into dist/: one bundle of src/main.ts (with xterm.js) and one stylesheet,
// both named by their content's hash, and index.html naming them. esbuild does it alone: the
// app is small and needs no dev server, so no larger toolchain earns its place.
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
const result = await build({
  entryPoints: [join(here, "src/main.ts"), join(here, "src/style.css")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  outdir: join(dist, "assets"),
  entryNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});
const outputs = Object.keys(result.metafile.outputs).map((path) => basename(path));
const script = outputs.find((name) => name.startsWith("main-") && name.endsWith(".js"));
const style = outputs.find((name) => name.startsWith("style-") && name.endsWith(".css"));
if (!script || !style) throw new Error(`esbuild wrote no bundle: ${outputs.join(", ")}`);
const page = readFileSync(join(here, "src/index.html"), "utf8")
  .replace("{{SCRIPT}}", `assets/${script}`)
  .replace("{{STYLE}}", `assets/${style}`);
writeFileSync(join(dist, "index.html"), page);
console.log(`console: built ${outputs.length + 1} files into dist/`);
