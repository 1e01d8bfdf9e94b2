// Builds the rider app into dist/: our sources plus the QR encoder's browser module, and a
// service worker that precaches exactly these files under a version derived from their bytes.
// No bundler: the browser loads the ES modules as they are.
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");
const staging = join(here, "dist.tmp");
const encoder = join(here, "node_modules", "qrcode-generator", "dist", "qrcode.mjs");

if (!existsSync(encoder)) {
  console.error("qrcode-generator is not installed: run `npm install --no-package-lock` first (or `make app`).");
  process.exit(1);
}

function files(folder) {
  return readdirSync(folder).flatMap((name) => {
    const path = join(folder, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

rmSync(staging, { recursive: true, force: true });
mkdirSync(join(staging, "vendor"), { recursive: true });
for (const path of files(src)) {
  if (relative(src, path) !== "sw.js") cpSync(path, join(staging, relative(src, path)));
}
cpSync(encoder, join(staging, "vendor", "qrcode.js"));

// Everything the app needs offline, "./" being index.html itself.
const assets = files(staging).map((path) => relative(staging, path).split("\\").join("/")).sort();
const digest = createHash("sha256");
for (const asset of assets) digest.update(asset).update("\0").update(readFileSync(join(staging, asset)));
const version = digest.digest("hex").slice(0, 16);
const precache = ["./", ...assets.filter((asset) => asset !== "index.html")];
const worker = readFileSync(join(src, "sw.js"), "utf8")
  .replace("__VERSION__", version)
  .replace('["__ASSETS__"]', JSON.stringify(precache));
writeFileSync(join(staging, "sw.js"), worker);
writeFileSync(join(staging, "build.json"), JSON.stringify({ version, assets: [...assets, "sw.js"] }, null, 2) + "\n");

rmSync(dist, { recursive: true, force: true });
renameSync(staging, dist);
console.log(`Rider app ${version} built in ${relative(process.cwd(), dist) || "."} (${assets.length + 1} files)`);
