// What a web developer gets before running anything: the client's size, its declarations, and no
// dependency or module syntax that would stop it from loading as a classic script.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';
import { minify } from 'terser';

const web = (name) => fileURLToPath(new URL(`../../../web/${name}`, import.meta.url));
const LIMIT = 4096;

describe('web/keepalive.js as shipped', () => {
  const source = readFileSync(web('keepalive.js'), 'utf8');

  it(`is at most ${LIMIT} bytes minified and gzipped`, async () => {
    const { code } = await minify(source, { compress: { passes: 2 }, mangle: true });
    const size = gzipSync(code, { level: 9 }).length;
    console.log(`keepalive.js: ${source.length} B source, ${code.length} B minified, ${size} B gzipped (limit ${LIMIT})`);
    assert.ok(size <= LIMIT, `${size} B gzipped is over ${LIMIT} B`);
  });

  it('runs as a classic script and defines the global factory, with no import, require or eval', () => {
    assert.doesNotMatch(source, /^\s*(import|export)\s/m);
    assert.doesNotMatch(source, /\brequire\(|\beval\(|new Function\(/);
    const sandbox = { URL, URLSearchParams, location: { href: 'https://shop.example/app/' } };
    sandbox.self = sandbox;
    vm.runInNewContext(source, sandbox);
    assert.equal(typeof sandbox.createKeepalive, 'function');
    assert.equal(sandbox.createKeepalive().state.running, false);
  });

  it('has TypeScript declarations that type a module user and a global user strictly', () => {
    const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
    const project = fileURLToPath(new URL('../types/tsconfig.json', import.meta.url));
    try {
      execFileSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      assert.fail(`tsc found errors:\n${e.stdout}${e.stderr}`);
    }
  });
});
