// Builds dist/ from src/ with esbuild: the ES module and CommonJS builds a bundler or Node
// imports, minified ES module and classic-script builds the keepalive server embeds, and the
// hand-written declarations. dist/ is committed (the Rust server compiles it in with no Node
// around), so the build is deterministic and writes only the files whose bytes change.
//
//   node build.mjs           build into dist/
//   node build.mjs --check   build in memory; fail, naming the files, if dist/ differs

import { build } from 'esbuild';
import { readFileSync, writeFileSync, readdirSync, mkdirSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const { version, license } = JSON.parse(readFileSync(here('package.json'), 'utf8'));
const banner = `/*! keepalive-client ${version} (${license}) */`;
const check = process.argv.includes('--check');

// Browsers from 2020 on; the code needs fetch and AbortController anyway.
const common = { bundle: true, write: false, target: 'es2020', charset: 'utf8', banner: { js: banner }, logLevel: 'warning' };
const builds = [
  { entryPoints: [here('src/keepalive.js')], format: 'esm', outfile: 'keepalive.mjs' },
  { entryPoints: [here('src/keepalive.js')], format: 'esm', outfile: 'keepalive.min.mjs', minify: true },
  { entryPoints: [here('src/keepalive.js')], format: 'cjs', platform: 'node', outfile: 'keepalive.cjs' },
  { entryPoints: [here('src/global.js')], format: 'iife', outfile: 'keepalive.global.js' },
  { entryPoints: [here('src/global.js')], format: 'iife', outfile: 'keepalive.global.min.js', minify: true },
];

const files = {};
for (const { outfile, ...options } of builds) {
  const result = await build({ ...common, ...options, outfile: here(`dist/${outfile}`) });
  files[outfile] = result.outputFiles[0].text;
}
// One declaration file serves both module systems; TypeScript wants it named after each.
const types = readFileSync(here('src/keepalive.d.ts'), 'utf8');
files['keepalive.d.ts'] = types;
files['keepalive.d.cts'] = types;
files['keepalive.global.d.ts'] = readFileSync(here('src/global.d.ts'), 'utf8');

const present = existsSync(here('dist')) ? readdirSync(here('dist')) : [];
const differ = Object.keys(files).filter((name) => !present.includes(name) || readFileSync(here(`dist/${name}`), 'utf8') !== files[name]);
const stray = present.filter((name) => !(name in files));

if (check) {
  if (differ.length || stray.length) {
    console.error(`client/dist is not the build of client/src: ${[...differ, ...stray].join(', ')} differ.\nRun \`npm run build --prefix client\` and commit client/dist.`);
    process.exit(1);
  }
  // On stderr: `npm pack --json` runs this as its prepack script and prints JSON on stdout.
  console.error(`client/dist is the build of client/src (${Object.keys(files).length} files)`);
} else {
  mkdirSync(here('dist'), { recursive: true });
  for (const name of differ) writeFileSync(here(`dist/${name}`), files[name]);
  if (stray.length) console.warn(`not built, left in client/dist: ${stray.join(', ')}`);
  console.log(differ.length ? `wrote client/dist/${differ.join(', client/dist/')}` : 'client/dist is up to date');
}
