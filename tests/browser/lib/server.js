// Runs the real keepalive binary for a test: on a free loopback port, with a data dir of its own,
// and able to stop (SIGTERM), die (SIGKILL), freeze (SIGSTOP) and come back on the same port and data.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = resolve(here, '..', process.env.KEEPALIVE_BIN || '../../target/debug/keepalive');

const running = new Set();
// A test that fails or times out must not leave a server behind.
process.on('exit', () => { for (const child of running) child.kill('SIGKILL'); });

function freePort() {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Settings close to production (30 s tick, 8 s timeout, 3 retries); tests override what they need. */
export const DEFAULT_ENV = {
  KEEPALIVE_ENV: 'development',
  KEEPALIVE_TICK: '30s',
  KEEPALIVE_TIMEOUT: '8s',
  KEEPALIVE_MAX_RETRIES: '3',
  KEEPALIVE_IDLE_TIMEOUT: '10m',
  KEEPALIVE_ABSOLUTE_LIFETIME: '12h',
  KEEPALIVE_LOG_LEVEL: 'warn',
};

/**
 * Starts the server and waits until `/readyz` answers 200.
 * @param {Record<string, string>} [env] extra environment
 */
export async function startServer(env = {}) {
  if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run \`cargo build\` first or set KEEPALIVE_BIN`);
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'keepalive-browser-'));
  const url = `http://127.0.0.1:${port}`;
  let child = null;
  let output = '';

  async function up() {
    output = '';
    child = spawn(BIN, [], {
      env: {
        PATH: process.env.PATH,
        ...DEFAULT_ENV,
        ...env,
        PORT: String(port),
        KEEPALIVE_BIND: '127.0.0.1',
        KEEPALIVE_DATA_DIR: dataDir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    const mine = child;
    const exited = new Promise((r) => mine.once('exit', (code, signal) => {
      running.delete(mine);
      // A server that dies on its own would otherwise look like a client bug in the test that follows.
      if (child === mine) console.error(`keepalive server exited unexpectedly (code ${code}, signal ${signal}):\n${output}`);
      r({ code, signal });
    }));
    mine.exited = exited;
    const keep = (d) => { output = (output + d).slice(-20000); };
    mine.stdout.on('data', keep);
    mine.stderr.on('data', keep);
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (mine.exitCode !== null || mine.signalCode !== null) break;
      try {
        const res = await fetch(`${url}/readyz`);
        if (res.status === 200) return;
      } catch { /* not listening yet */ }
      await sleep(50);
    }
    mine.kill('SIGKILL');
    throw new Error(`server did not become ready on ${url}:\n${output}`);
  }

  async function down(signal) {
    if (!child) return null;
    const mine = child;
    child = null;
    if (mine.exitCode !== null || mine.signalCode !== null) return mine.exited;
    mine.kill(signal);
    const timer = setTimeout(() => mine.kill('SIGKILL'), 10000);
    const result = await mine.exited;
    clearTimeout(timer);
    return result;
  }

  await up();
  return {
    port,
    url,
    dataDir,
    get output() { return output; },
    /** Graceful stop; resolves with the exit code and signal. */
    stop: () => down('SIGTERM'),
    /** The server is lost at once: no goodbye, connections refused. */
    kill: () => down('SIGKILL'),
    /** The server hangs: the port stays open but nothing answers. */
    freeze: () => child && child.kill('SIGSTOP'),
    thaw: () => child && child.kill('SIGCONT'),
    /** Starts again on the same port and data dir. */
    restart: up,
    /** Stops the server and removes its data. */
    async dispose() {
      if (child) { child.kill('SIGCONT'); await down('SIGKILL'); }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
