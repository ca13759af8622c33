// The controls an application has over the client: pause() and resume(), the user's presence
// (idle and active, with a client-side idleTimeout), headers, a fetch of its own, credentials for
// keepalive on another origin, the debug log, and the health an idle tab reads every
// healthCheckFrequency ticks. Against the real server, in Chromium, with the fake clock.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { startServer } from '../lib/server.js';
import { startOrigin } from '../lib/origin.js';
import { launch, newContext, openClient, record, signIn, advance, act, events, state, waitFor, isKeepalive } from '../lib/browser.js';

const isProbe = (r) => r.method === 'GET' && (r.path === '/livez' || r.path === '/health');

// A tab that signed in and whose client answered its start ping.
async function started(context, options = {}) {
  const page = await openClient(context, options);
  await signIn(page);
  await page.evaluate(() => window.client.start());
  await waitFor(async () => (await events(page, 'ping')).some((p) => p.keep && p.ok), 'the start ping');
  return page;
}

describe('the client\'s controls', { timeout: 120000 }, () => {
  let server, browser;

  before(async () => {
    server = await startServer();
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('pause() stops a tab pinging and hearing activity, another tab takes over, resume() listens again', async () => {
    const { context, requests } = await newContext(browser, server);
    const a = await started(context);
    await waitFor(async () => (await state(a)).leader, 'tab a holding the lock');
    const b = await openClient(context);
    await b.evaluate(() => window.client.start());
    await waitFor(async () => (await events(b, 'ping')).some((p) => p.keep && p.ok), 'tab b started');

    const { lastActivityAt } = await state(a);
    await a.evaluate(() => window.client.pause());
    const paused = await state(a);
    assert.deepEqual([paused.paused, paused.running, paused.leader], [true, true, false]);
    await waitFor(async () => (await state(b)).leader, 'tab b taking over the lock');

    // The user works in the paused tab: it records nothing and sends nothing; b only probes.
    const before = requests.length;
    for (let n = 0; n < 3; n++) {
      await advance(context, 2000);
      await act(a);
      await advance(context, 28000, { step: 2000 });
    }
    const during = requests.slice(before);
    assert.equal(during.length, 3, `one probe per tick: ${during.map((r) => r.path)}`);
    assert.ok(during.every((r) => r.page === b && isProbe(r)), JSON.stringify(during.map((r) => r.path)));
    assert.equal((await state(a)).lastActivityAt, lastActivityAt, 'no activity recorded while paused');

    await a.evaluate(() => window.client.resume());
    assert.equal((await state(a)).paused, false);
    const after = requests.length;
    await advance(context, 2000);
    await act(a);
    await advance(context, 28000, { step: 2000 });
    await waitFor(() => requests.slice(after).some((r) => isKeepalive(r) && r.status === 200), 'the keepalive of the next tick');
    const next = requests.slice(after).filter(isKeepalive);
    assert.equal(next.length, 1);
    assert.equal(next[0].page, b, 'the activity in the resumed tab reaches the tab that pings');
    await context.close();
  });

  it('resume() pings at once when the last answer is stale, and ends a session that ran out meanwhile', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await started(context);
    await page.evaluate(() => window.client.pause());
    const before = requests.length;
    await advance(context, 65000, { step: 5000 });
    assert.equal(requests.length, before, 'nothing sent while paused');

    await page.evaluate(() => window.client.resume());
    await waitFor(() => requests[before]?.status, 'the ping at resume');
    assert.equal(requests.length, before + 1);
    assert.ok(isProbe(requests[before]), 'no activity since the last ping: a probe, not a keepalive');
    await waitFor(async () => (await state(page)).lastOkAt > 0 && (await events(page, 'ping')).length === 2, 'the client reading it');

    await page.evaluate(() => window.client.pause());
    const paused = requests.length;
    await advance(context, 11 * 60000, { step: 30000 });
    assert.equal(requests.length, paused);
    assert.deepEqual(await events(page, 'expiring'), [], 'no countdown while paused');
    assert.deepEqual(await events(page, 'expired'), []);
    await page.evaluate(() => window.client.resume());
    const [expired] = await events(page, 'expired');
    assert.equal(expired?.reason, 'idle', 'the session ran out while paused');
    assert.equal(requests.length, paused, 'and is not pinged back to life');
    await context.close();
  });

  it('emits idle after idleTimeout without activity, stops extending, and active when the user is back', async () => {
    const { context, requests } = await newContext(browser, server);
    // Shorter than the 30 s tick: the tick after the user went idle must not extend the session.
    const page = await started(context, { idleTimeout: 10000 });
    const start = requests.length;
    await advance(context, 5000);
    await act(page);
    const actedAt = (await state(page)).lastActivityAt;
    await advance(context, 12000);
    const [idle] = await events(page, 'idle');
    assert.ok(idle, 'idle emitted');
    assert.equal(idle.at - actedAt, 10000, 'exactly idleTimeout after the last activity');
    assert.equal(idle.idleFor, 10000);
    assert.equal((await state(page)).idle, true);

    await advance(context, 13000);
    await waitFor(() => requests[start]?.status, 'the tick');
    assert.equal(requests.length, start + 1);
    assert.ok(isProbe(requests[start]), `active since the last ping but idle: no keepalive (${requests[start].path})`);

    await advance(context, 1000);
    await act(page);
    const [active] = await events(page, 'active');
    assert.ok(active, 'active emitted');
    assert.equal(active.idleFor, active.at - actedAt, 'idleFor counts from the last activity');
    assert.equal((await state(page)).idle, false);
    // Busy from here on: the next tick extends the session.
    await advance(context, 29000, { step: 2000, each: () => act(page) });
    await waitFor(() => requests.slice(start).some((r) => isKeepalive(r) && r.status === 200), 'the keepalive');
    assert.deepEqual((await events(page, 'idle')).length, 1);
    await context.close();
  });

  it('sends the application\'s headers (a value, or a function per request) through its own fetch', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await started(context, { headers: { 'x-app': 'shop' } });
    const first = requests.find(isKeepalive);
    assert.equal(first.headers['x-app'], 'shop');
    assert.equal(first.status, 200, 'the server answers as usual');

    await page.evaluate(() => {
      window.client.stop();
      let n = 0;
      window.through = [];
      window.client = window.createKeepalive({
        // Async, as a function that refreshes a token would be.
        headers: async ({ method, url }) => ({ 'x-request': `${++n} ${method} ${new URL(url).pathname}`, 'x-csrf-token': 'c5rf' }),
        fetch: (url, init) => {
          window.through.push(`${init.method} ${new URL(url).pathname} ${init.credentials}`);
          return fetch(url, init);
        },
      });
    });
    await record(page);
    const from = requests.length;
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'ping')).length === 1, 'the start ping');
    await advance(context, 30000, { step: 2000 });
    await waitFor(async () => (await events(page, 'ping')).length === 2, 'the idle probe');
    await page.evaluate(() => window.client.logout());
    await waitFor(() => requests.slice(from).find((r) => r.method === 'DELETE')?.status, 'the logout');

    const sent = requests.slice(from);
    assert.deepEqual(sent.map((r) => [r.headers['x-request'], r.headers['x-csrf-token'], r.status]), [
      ['1 GET /api/v1/keepalive/', 'c5rf', 200],
      ['2 GET /health', 'c5rf', 200],
      ['3 DELETE /api/v1/session', 'c5rf', 204],
    ]);
    assert.deepEqual(await page.evaluate(() => window.through), [
      'GET /api/v1/keepalive/ same-origin', 'GET /health same-origin', 'DELETE /api/v1/session same-origin',
    ]);
    await context.close();
  });

  it('logs each decision to a debug function, or to console.debug', async () => {
    const { context } = await newContext(browser, server);
    const page = await openClient(context);
    await signIn(page);
    await page.evaluate(() => {
      window.decisions = [];
      window.client = window.createKeepalive({ debug: (message, details) => window.decisions.push([message, details]) });
    });
    await record(page);
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'ping')).length === 1, 'the start ping');
    await advance(context, 31000, { step: 1000 });
    await waitFor(async () => (await events(page, 'ping')).length === 2, 'the idle probe');
    await page.evaluate(() => { window.client.pause(); window.client.resume(); window.client.stop(); });
    const decisions = await page.evaluate(() => window.decisions);
    const messages = decisions.map(([m]) => m);
    for (const expected of ['start', 'keepalive', 'health: healthy', 'leader', 'health check', 'idle', 'pause', 'resume', 'stop']) {
      assert.ok(messages.includes(expected), `${expected} in ${messages}`);
    }
    assert.ok(messages.indexOf('keepalive') < messages.indexOf('idle'), 'in order');
    assert.equal(decisions.find(([m]) => m === 'keepalive')[1].attempt, 0);
    assert.ok(decisions.find(([m]) => m === 'idle')[1].idleFor >= 30000, 'idle after one tick by default');

    const logged = [];
    page.on('console', (m) => { if (m.type() === 'debug') logged.push(m.text()); });
    await page.evaluate(() => {
      window.client = window.createKeepalive({ debug: true });
      window.client.start();
    });
    await waitFor(() => logged.some((l) => l.startsWith('keepalive: keepalive')), 'console.debug');
    assert.ok(logged[0].startsWith('keepalive: start'), logged[0]);
    await context.close();
  });
});

describe('keepalive on another origin', { timeout: 120000 }, () => {
  let server, browser, origin;

  before(async () => {
    // The app's page on one port of 127.0.0.1, keepalive on another: cross-origin, same-site.
    origin = await startOrigin({
      '/app.html': () => `<!doctype html><meta charset="utf-8"><title>app</title><script src="${server.url}/keepalive.js"></script><p>an app on its own origin</p>`,
    });
    server = await startServer({ KEEPALIVE_CORS_ORIGINS: origin.url });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
    await origin?.close();
  });

  it('needs credentials: "include" for the session cookie to go along, and then keeps and ends the session', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await context.newPage();
    await page.goto(`${origin.url}/app.html`);
    assert.notEqual(await page.evaluate(() => location.origin), server.url);
    const created = await page.evaluate(async (ka) => (await fetch(`${ka}/api/v1/session`, {
      method: 'POST', credentials: 'include', headers: { 'content-type': 'application/json' }, body: '{"data":{}}',
    })).status, server.url);
    assert.equal(created, 201, 'signed in from the app\'s page (cors_origins allows it)');

    const open = (credentials) => page.evaluate(({ ka, credentials }) => {
      window.client = window.createKeepalive({
        url: `${ka}/api/v1/keepalive/`, probeUrl: `${ka}/livez`, healthUrl: `${ka}/health`, sessionUrl: `${ka}/api/v1/session`, credentials,
      });
    }, { ka: server.url, credentials });

    // The default, same-origin: the browser keeps the cookie to itself, and keepalive sees no session.
    await open(undefined);
    await record(page);
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'expired')).length === 1, 'expired');
    assert.equal((await events(page, 'expired'))[0].reason, 'server');
    assert.equal(requests.filter(isKeepalive).at(-1).status, 401);

    await open('include');
    await record(page);
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'ping')).some((p) => p.keep && p.ok), 'the keepalive');
    assert.equal(requests.filter(isKeepalive).at(-1).status, 200);
    const s = await state(page);
    assert.ok(s.expiresIn > 9 * 60000, `expiresIn ${s.expiresIn}`);
    assert.equal(s.health, 'healthy', 'the answer was readable across origins');

    await advance(context, 30000, { step: 2000 });
    await waitFor(async () => (await events(page, 'ping')).length === 2, 'the idle probe');
    assert.equal((await events(page, 'ping'))[1].ok, true, 'probes cross origins too');

    await page.evaluate(() => window.client.logout());
    await waitFor(() => requests.find((r) => r.method === 'DELETE')?.status, 'the logout');
    assert.equal(requests.find((r) => r.method === 'DELETE').status, 204);
    const after = await page.evaluate(async (ka) => (await fetch(`${ka}/api/v1/session`, { credentials: 'include' })).status, server.url);
    assert.equal(after, 401, 'the logout ended the session');
    await context.close();
  });
});

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

describe('an idle tab and the server\'s health', { timeout: 120000 }, () => {
  let redis, server, browser;

  before(async () => {
    const port = await freePort();
    redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitFor(() => new Promise((ok) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); ok(true); });
      socket.on('error', () => ok(false));
    }), 'redis-server');
    server = await startServer({
      REDIS_URL: `redis://127.0.0.1:${port}`, KEEPALIVE_HEALTH_CHECK_FREQUENCY: '2', KEEPALIVE_HEALTH_INTERVAL: '200ms',
    });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
    redis?.kill('SIGKILL');
  });

  it('reads /health every healthCheckFrequency ticks, so a server degraded meanwhile shows without activity', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await started(context);
    assert.deepEqual((await state(page)).checks, { redis: 'ok', memory: 'ok' });

    redis.kill('SIGKILL');
    await waitFor(async () => (await (await fetch(`${server.url}/health`)).json()).status === 'warn', 'the server degraded');
    const from = requests.length;
    await advance(context, 30000, { step: 2000 });
    await waitFor(() => requests[from]?.status, 'the first idle tick');
    await waitFor(async () => (await events(page, 'ping')).length === 2, 'the client reading it');
    assert.equal(requests[from].path, '/livez');
    assert.equal((await state(page)).health, 'healthy', '/livez says nothing of health');

    await advance(context, 30000, { step: 2000 });
    await waitFor(async () => (await events(page, 'health')).length === 2, 'the health change');
    assert.equal(requests[from + 1].path, '/health');
    const [, change] = await events(page, 'health');
    assert.deepEqual([change.status, change.previous, change.checks], ['degraded', 'healthy', null]);
    assert.equal(requests.filter(isKeepalive).length, 1, 'and the session was not extended');
    await context.close();
  });
});
