// The package as a frontend team gets it: packed with `npm pack`, installed from the tarball into
// a project of its own, imported from Node as an ES module and through require() without any
// browser global, bundled with esbuild, its declarations compiled strictly by tsc; and its size.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import vm from 'node:vm';
import { build } from 'esbuild';

const client = fileURLToPath(new URL('..', import.meta.url));
const dist = (name) => join(client, 'dist', name);
const pkg = JSON.parse(readFileSync(join(client, 'package.json'), 'utf8'));
const LIMIT = 4096;

function run(cmd, args, cwd) {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    assert.fail(`${cmd} ${args.join(' ')} failed:\n${e.stdout}${e.stderr}`);
  }
}

describe('the built client', () => {
  for (const name of ['keepalive.min.mjs', 'keepalive.global.min.js']) {
    it(`${name} is at most ${LIMIT} bytes minified and gzipped`, () => {
      const code = readFileSync(dist(name));
      const size = gzipSync(code, { level: 9 }).length;
      console.log(`${name}: ${code.length} B minified, ${size} B gzipped (limit ${LIMIT})`);
      assert.ok(size <= LIMIT, `${size} B gzipped is over ${LIMIT} B`);
    });
  }

  it('has the version of the server (Cargo.toml)', () => {
    const cargo = readFileSync(join(client, '..', 'Cargo.toml'), 'utf8');
    const version = /^\[package\][^[]*?^version\s*=\s*"([^"]+)"/m.exec(cargo)[1];
    assert.equal(pkg.version, version);
  });

  it('runs as a classic script and defines the global factory, with no import, require or eval', () => {
    const source = readFileSync(dist('keepalive.global.min.js'), 'utf8');
    assert.doesNotMatch(source, /(^|[;}])\s*(import|export)[\s{*]/m);
    assert.doesNotMatch(source, /\brequire\(|\beval\(|new Function\(/);
    const sandbox = { URL, URLSearchParams };
    vm.runInNewContext(source, sandbox);
    assert.equal(typeof sandbox.createKeepalive, 'function');
    assert.equal(sandbox.createKeepalive().state.running, false);
  });
});

describe('the package, packed and installed', { timeout: 120000 }, () => {
  let scratch, tarball;

  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'keepalive-client-'));
    const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', scratch], client));
    tarball = join(scratch, packed.filename);
    writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }));
    // From the tarball alone: the package has no dependencies, so nothing else is fetched.
    run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--no-package-lock', tarball], scratch);
  });

  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('holds dist, the README, the licence and package.json, and nothing else', () => {
    const listing = JSON.parse(run('npm', ['pack', '--dry-run', '--json'], client))[0].files.map((f) => f.path).sort();
    assert.deepEqual(listing, [
      'LICENSE-APACHE', 'LICENSE-MIT', 'README.md',
      ...readdirSync(join(client, 'dist')).map((f) => `dist/${f}`),
      'package.json',
    ].sort());
    const installed = join(scratch, 'node_modules', 'keepalive-client');
    assert.equal(readFileSync(join(installed, 'dist', 'keepalive.mjs'), 'utf8'), readFileSync(dist('keepalive.mjs'), 'utf8'));
  });

  // Getters on the browser's globals count every read; none may happen before start().
  const TRAP = `
    const touched = [];
    for (const name of ['window', 'document', 'navigator', 'location', 'localStorage', 'BroadcastChannel', 'addEventListener']) {
      const had = Object.getOwnPropertyDescriptor(globalThis, name);
      Object.defineProperty(globalThis, name, { configurable: true, get() { touched.push(name); return had && (had.get ? had.get.call(globalThis) : had.value); } });
    }`;
  const USE = `
    const client = createKeepalive({ probeUrl: null });
    const off = client.on('ping', () => {});
    off();
    const before = { running: client.state.running, touched: touched.length };
    client.stop();
    client.start({ session: { expiresAt: '2030-01-01T00:10:00.000Z', absoluteExpiresAt: '2030-01-01T12:00:00.000Z', idleTimeoutMs: 600000 },
      keepalive: { tickMs: 30000, timeoutMs: 8000, maxRetries: 3, healthCheckFrequency: 1 }, serverTime: '2030-01-01T00:00:00.000Z' });
    const started = client.state.running;
    client.stop();
    console.log(JSON.stringify({ ...before, started, touchedAtStart: touched.length > 0, global: typeof globalThis.createKeepalive }));`;

  it('imports as an ES module in Node without touching a browser global until start()', () => {
    const out = run(process.execPath, ['--input-type=module', '-e', `${TRAP}
      const { createKeepalive, default: byDefault } = await import('keepalive-client');
      if (byDefault !== createKeepalive) throw new Error('default export differs');
      ${USE}`], scratch);
    assert.deepEqual(JSON.parse(out), { running: false, touched: 0, started: true, touchedAtStart: true, global: 'undefined' });
  });

  it('loads through require() in CommonJS, without touching a browser global until start()', () => {
    const out = run(process.execPath, ['--input-type=commonjs', '-e', `${TRAP}
      const { createKeepalive, default: byDefault } = require('keepalive-client');
      if (byDefault !== createKeepalive) throw new Error('default export differs');
      ${USE}`], scratch);
    assert.deepEqual(JSON.parse(out), { running: false, touched: 0, started: true, touchedAtStart: true, global: 'undefined' });
  });

  it('bundles with esbuild: the client when used, nothing when unused, the global with /global', async () => {
    const bundle = async (contents) => {
      const result = await build({
        stdin: { contents, resolveDir: scratch, loader: 'js' },
        absWorkingDir: scratch, bundle: true, format: 'esm', platform: 'browser', minify: true, write: false, logLevel: 'silent',
      });
      return result.outputFiles[0].text;
    };
    const used = await bundle("import { createKeepalive } from 'keepalive-client'; createKeepalive().start();");
    assert.match(used, /api\/v1\/keepalive/);
    assert.ok(used.length < readFileSync(dist('keepalive.min.mjs')).length + 200, `${used.length} B`);
    // sideEffects: an import nobody uses leaves nothing behind.
    assert.equal((await bundle("import { createKeepalive } from 'keepalive-client';")).trim(), '');
    assert.match(await bundle("import 'keepalive-client/global';"), /globalThis\.createKeepalive=/);
  });

  it('types an ES module, a CommonJS module, a bundled app and a global user strictly (tsc)', () => {
    const tsc = join(client, 'node_modules', 'typescript', 'bin', 'tsc');
    for (const file of readdirSync(join(client, 'test', 'types'))) copyFileSync(join(client, 'test', 'types', file), join(scratch, file));
    const strict = { strict: true, noEmit: true, target: 'es2020', lib: ['es2020', 'dom'], types: [], skipLibCheck: false };
    const projects = {
      'tsconfig.node.json': { compilerOptions: { ...strict, module: 'nodenext', moduleResolution: 'nodenext' }, files: ['esm-usage.mts', 'cjs-usage.cts'] },
      'tsconfig.bundler.json': { compilerOptions: { ...strict, module: 'esnext', moduleResolution: 'bundler' }, files: ['module-usage.ts', 'global-usage.ts'] },
    };
    for (const [name, config] of Object.entries(projects)) {
      writeFileSync(join(scratch, name), JSON.stringify(config));
      run(process.execPath, [tsc, '-p', name], scratch);
    }
  });
});
