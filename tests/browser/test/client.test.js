// The client against the real server: loading styles, regular pings at the server's tick, the
// ping URL with and without extra query parameters, and the idle user's probe.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer } from '../lib/server.js';
import { launch, newContext, openClient, signIn, advance, act, events, state, waitFor, isKeepalive } from '../lib/browser.js';

describe('keepalive.js', { timeout: 90000 }, () => {
  let server, browser;

  before(async () => {
    // A tick different from the client's 30 s default shows the server's answer is what counts;
    // health every 2 ticks, as in production.
    server = await startServer({ KEEPALIVE_TICK: '20s', KEEPALIVE_TIMEOUT: '5s', KEEPALIVE_HEALTH_CHECK_FREQUENCY: '2' });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('loads as a classic script, as an ES module and through CommonJS', async () => {
    const { context } = await newContext(browser, server);
    const page = await context.newPage();
    await page.goto('/test.html');
    assert.equal(await page.evaluate(() => typeof window.createKeepalive), 'function');
    await page.goto('/test-module.html');
    await waitFor(() => page.evaluate(() => window.moduleLoaded), 'the module to load');
    assert.equal(await page.evaluate(() => window.moduleLoaded), 'function');
    await context.close();

    const cjs = createRequire(import.meta.url)('../../../client/dist/keepalive.cjs');
    assert.equal(typeof cjs.createKeepalive, 'function');
    assert.equal(cjs.default, cjs.createKeepalive);
    const client = cjs.createKeepalive();
    assert.deepEqual(Object.keys(client).sort(), ['extend', 'logout', 'off', 'on', 'pause', 'resume', 'start', 'state', 'stop']);
    assert.equal(client.state.running, false);
  });

  it('pings once at start, then once per server tick while the user is active, each answered 200', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await openClient(context);
    await signIn(page);
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'ping')).length === 1, 'the first ping');
    const first = await state(page);
    assert.equal(first.tick, 20000, 'tick comes from the server');
    assert.equal(first.timeout, 5000, 'timeout comes from the server');
    assert.equal(first.health, 'healthy');
    assert.ok(first.expiresIn > 9 * 60000 && first.expiresIn <= 10 * 60000, `expiresIn ${first.expiresIn}`);

    for (let n = 2; n <= 4; n++) {
      await advance(context, 2000);
      await act(page);
      await advance(context, 18000, { step: 2000 });
      await waitFor(async () => (await events(page, 'ping')).length === n, `ping ${n}`);
    }
    const pings = requests.filter(isKeepalive);
    assert.equal(pings.length, 4, 'one keepalive per tick');
    assert.ok(pings.every((r) => r.status === 200), JSON.stringify(pings.map((r) => r.status)));
    const log = await events(page, 'ping');
    const gaps = log.slice(1).map((p, i) => p.at - log[i].at);
    assert.ok(gaps.every((g) => g >= 19000 && g <= 21000), `ticks of 20 s: ${gaps}`);
    assert.equal(requests.filter((r) => r.path === '/livez' || r.path === '/health').length, 0, 'no probe while active');
    assert.deepEqual((await events(page, 'health')).map((h) => h.status), ['healthy']);
    await context.close();
  });

  it('keeps an idle session to itself: probes the server, reads its health every 2 ticks, sends no keepalive', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await openClient(context);
    await signIn(page);
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'ping')).length === 1, 'the first ping');
    const before = (await state(page)).expiresAt;
    await advance(context, 60000, { step: 2000 });
    await waitFor(async () => (await events(page, 'ping')).length === 4, 'three probes');
    assert.equal(requests.filter(isKeepalive).length, 1, 'only the start ping extended the session');
    const probes = requests.filter((r) => r.path === '/livez' || r.path === '/health');
    assert.deepEqual(probes.map((r) => [r.path, r.status]), [['/livez', 200], ['/health', 200], ['/livez', 200]],
      'the keepalive answer carries health, so the second idle tick is the first to look at /health');
    const state2 = await state(page);
    assert.equal(state2.healthCheckFrequency, 2);
    assert.equal(state2.health, 'healthy');
    assert.equal((await state(page)).expiresAt, before, 'probes do not move the expiry');
    await context.close();
  });

  it('counts a 200 with a body it cannot read as a failed ping, not as a session', async () => {
    const { context, requests } = await newContext(browser, server);
    // The one stand-in in these tests: a proxy that answers 200 with a page of its own.
    await context.route(`${server.url}/api/v1/keepalive/`, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: '{"ok":true}' }));
    const page = await openClient(context, { maxRetries: 0 });
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'disconnected')).length === 1, 'disconnected');
    const [ping] = await events(page, 'ping');
    assert.equal(ping.ok, false);
    assert.equal(ping.error, 'unexpected answer');
    assert.equal((await state(page)).expiresAt, 0);
    assert.equal(requests.filter(isKeepalive).length, 1);
    await context.close();
  });

  it('builds its URL with URLSearchParams, with and without extra query parameters', async () => {
    const { context, requests } = await newContext(browser, server);
    const page = await openClient(context);
    await signIn(page);
    await page.evaluate(() => window.client.start());
    await waitFor(() => requests.find((r) => isKeepalive(r) && r.status), 'the plain ping');

    await page.evaluate(() => {
      window.client.stop();
      window.tagged = window.createKeepalive({ url: '/api/v1/keepalive?app=demo', params: { tab: 'a b&c', v: 2 } });
      window.tagged.start();
    });
    await waitFor(() => requests.filter((r) => isKeepalive(r) && r.status).length === 2, 'the tagged ping');
    const [plain, tagged] = requests.filter(isKeepalive);
    assert.equal(plain.path, '/api/v1/keepalive/');
    assert.equal(plain.search, '');
    assert.equal(plain.status, 200);
    assert.equal(tagged.path, '/api/v1/keepalive');
    assert.equal(tagged.search, '?app=demo&tab=a+b%26c&v=2');
    assert.equal(tagged.status, 200);
    // The harness sees the answer's status before the client has read its body: wait for the
    // client to have taken the health from it.
    await waitFor(async () => (await page.evaluate(() => window.tagged.state)).health === 'healthy', 'the tagged client healthy');
    await context.close();
  });
});
