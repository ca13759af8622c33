// Headless Chromium (Debian's, driven by playwright-core) with a fake clock, and the helpers the
// tests share: a bare page that loads the client, stepping the clock without outrunning the
// network, and a record of every request the pages send to the server.

import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_PATH`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// Counts the page's fetches until their bodies have arrived. The fake clock only moves when a test
// says so, so a test waits for this to reach zero before moving it again; otherwise a 30 s step
// could fire a ping's 8 s timeout while the real server is still answering.
const INSTRUMENT = `(() => {
  const real = window.fetch;
  let inflight = 0;
  Object.defineProperty(window, '__inflight', { get: () => inflight });
  window.fetch = function (...args) {
    inflight++;
    return real.apply(this, args).then(
      async (res) => { try { await res.clone().arrayBuffer(); } catch {} inflight--; return res; },
      (err) => { inflight--; throw err; });
  };
})();`;

const PAGES = {
  '/test.html': '<!doctype html><meta charset="utf-8"><title>client</title><script src="/keepalive.js"></script><p>client test page</p>',
  '/test-module.html': '<!doctype html><meta charset="utf-8"><title>client module</title><script type="module">import "/keepalive.js"; window.moduleLoaded = typeof createKeepalive;</script><p>module test page</p>',
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` in real time until it returns something truthy. */
export async function waitFor(check, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A browser context on the server's origin with the fake clock installed, the test pages routed
 * (everything else goes to the real server) and the server requests recorded.
 */
export async function newContext(browser, server, options = {}) {
  const context = await browser.newContext({ baseURL: server.url, ...options });
  await context.addInitScript(INSTRUMENT);
  for (const [path, body] of Object.entries(PAGES)) {
    await context.route(server.url + path, (route) => route.fulfill({ contentType: 'text/html', body }));
  }
  // Paused: fake time moves only through runFor, never with the real time a request takes.
  const start = Date.now();
  await context.clock.install({ time: start });
  await context.clock.pauseAt(start + 1000);
  const requests = [];
  context.on('request', (req) => {
    const url = new URL(req.url());
    if (url.origin !== server.url || url.pathname.endsWith('.html') || url.pathname.includes('.')) return;
    const record = { method: req.method(), path: url.pathname, search: url.search, headers: req.headers(), page: req.frame().page(), status: null, failed: false };
    requests.push(record);
    req.response().then((res) => { record.status = res ? res.status() : null; }, () => { record.failed = true; });
  });
  context.on('requestfailed', (req) => {
    const hit = requests.findLast((r) => r.path === new URL(req.url()).pathname && r.status === null);
    if (hit) hit.failed = true;
  });
  return { context, requests };
}

export const isKeepalive = (r) => r.method === 'GET' && r.path.startsWith('/api/v1/keepalive');

export const EVENTS = ['health', 'disconnected', 'reconnected', 'expiring', 'expired', 'ping', 'idle', 'active'];

/** Records the events of the page's `window.client` in `window.log` (with fake-clock times). */
export function record(page) {
  return page.evaluate((types) => {
    window.log = [];
    for (const type of types) window.client.on(type, (data) => window.log.push({ type, at: Date.now(), ...data }));
  }, EVENTS);
}

/**
 * Opens a page that loads the client, creates `window.client` with `options` (JSON: a test that
 * passes functions creates its client in the page and calls `record`) and records its events.
 */
export async function openClient(context, options = {}, path = '/test.html') {
  const page = await context.newPage();
  await page.goto(path);
  await page.evaluate((opts) => { window.client = window.createKeepalive(opts); }, options);
  await record(page);
  return page;
}

/** Creates a session for the context's cookie jar, through the page, as a sign-in form would. */
export function signIn(page) {
  return page.evaluate(async () => {
    const res = await fetch('/api/v1/session', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: { user: 'test' } }),
    });
    if (res.status !== 201) throw new Error(`sign-in answered ${res.status}`);
    return res.json();
  });
}

/** Waits until no page of the context has a fetch in flight (a frozen server: gives up after `cap`). */
export async function settle(context, cap = 3000) {
  const deadline = Date.now() + cap;
  let quiet = 0;
  while (Date.now() < deadline && quiet < 2) {
    let busy = 0;
    for (const page of context.pages()) busy += await page.evaluate(() => window.__inflight || 0).catch(() => 0);
    quiet = busy ? 0 : quiet + 1;
    await sleep(busy ? 10 : 15);
  }
}

/** Moves the fake clock by `ms` in steps of `step`, letting the network settle after each. */
export async function advance(context, ms, { step = 1000, cap, each } = {}) {
  for (let done = 0; done < ms; done += step) {
    const by = Math.min(step, ms - done);
    await context.clock.runFor(by);
    await settle(context, cap);
    if (each) await each(done + by);
  }
}

let spot = 0;
/** Real pointer input, so the client's activity listeners see a person. */
export async function act(page) {
  spot = (spot + 37) % 300;
  await page.mouse.move(20 + spot, 40 + (spot % 90));
}

export const events = (page, type) => page.evaluate((t) => window.log.filter((e) => !t || e.type === t), type);
export const state = (page) => page.evaluate(() => window.client.state);
export const now = (page) => page.evaluate(() => Date.now());
