// Activity gating and the session's end: an idle user stops extending the session and gets
// `expiring` then `expired`; `extend()` keeps it; a 401 ends pinging; a tab that wakes up late
// pings at once.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { launch, newContext, openClient, signIn, advance, act, events, state, now, waitFor, sleep, isKeepalive } from '../lib/browser.js';

async function started(browser, server, options) {
  const { context, requests } = await newContext(browser, server);
  const page = await openClient(context, options);
  await signIn(page);
  await page.evaluate(() => window.client.start());
  await waitFor(async () => (await events(page, 'ping')).length === 1, 'the first ping');
  return { context, requests, page };
}

describe('idle users and the end of a session', { timeout: 120000 }, () => {
  let server, browser;

  before(async () => {
    server = await startServer({ KEEPALIVE_IDLE_TIMEOUT: '3m' });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('an idle user stops pinging, gets expiring (60 s ahead, each second) then expired', async () => {
    const { context, requests, page } = await started(browser, server);
    const { expiresAt } = await state(page);
    await advance(context, 200000, { step: 5000 });

    assert.equal(requests.filter(isKeepalive).length, 1, 'no keepalive after the start ping');
    const expiring = await events(page, 'expiring');
    assert.equal(expiring[0].secondsLeft, 60);
    assert.ok(Math.abs(expiring[0].at - (expiresAt - 60000)) < 1000, 'warned 60 s ahead');
    assert.deepEqual(expiring.map((e) => e.secondsLeft), Array.from({ length: 60 }, (_, i) => 60 - i));
    assert.ok(expiring.every((e) => e.final === false), 'extend() could still help');
    const expired = await events(page, 'expired');
    assert.equal(expired.length, 1);
    assert.equal(expired[0].reason, 'idle');
    assert.ok(Math.abs(expired[0].at - expiresAt) < 1000, 'expired when the server said it would');

    const s = await state(page);
    assert.equal(s.running, false);
    assert.equal(s.expired, true);
    const count = requests.length;
    await advance(context, 60000, { step: 10000 });
    assert.equal(requests.length, count, 'nothing is sent after expiry');
    await context.close();
  });

  it('extend() keeps the session; activity alone does not dismiss the warning', async () => {
    const { context, requests, page } = await started(browser, server);
    await advance(context, 125000, { step: 5000 });
    assert.equal((await state(page)).expiring, true);

    await act(page);
    await advance(context, 2000);
    await act(page);
    assert.equal((await state(page)).expiring, true, 'a stray pointer move does not answer "Stay signed in?"');
    assert.equal(requests.filter(isKeepalive).length, 1);

    assert.equal(await page.evaluate(() => window.client.extend()), true);
    const s = await state(page);
    assert.equal(s.expiring, false);
    assert.ok(s.expiresIn > 170000, `expires in ${s.expiresIn} ms`);
    const pings = requests.filter(isKeepalive);
    assert.equal(pings.length, 2);
    assert.equal(pings[1].status, 200);

    const warned = (await events(page, 'expiring')).length;
    await advance(context, 100000, { step: 5000 });
    assert.equal((await events(page, 'expiring')).length, warned, 'no new warning yet');
    assert.deepEqual(await events(page, 'expired'), []);
    await context.close();
  });

  it('a 401 from the server ends pinging and emits expired', async () => {
    const { context, requests, page } = await started(browser, server);
    await page.evaluate(() => fetch('/api/v1/session', { method: 'DELETE', credentials: 'same-origin' }));
    await advance(context, 2000);
    await act(page);
    await advance(context, 28000, { step: 2000 });
    await waitFor(async () => (await events(page, 'expired')).length === 1, 'expired');
    assert.equal((await events(page, 'expired'))[0].reason, 'server');
    assert.equal(requests.filter(isKeepalive).at(-1).status, 401);
    const count = requests.length;
    await act(page);
    await advance(context, 90000, { step: 5000, each: async () => act(page) });
    assert.equal(requests.length, count, 'no ping after the 401');
    assert.equal((await state(page)).health, 'healthy', 'health read from the 401 body');
    await context.close();
  });

  it('a tab that wakes up late (throttled timers) pings at once; a fresh one does not', async () => {
    const { context, requests, page } = await started(browser, server);
    // Time passes without the timers running, as in a throttled background tab.
    await context.clock.setSystemTime((await now(page)) + 45000);
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    await waitFor(() => requests.filter(isKeepalive)[1]?.status, 'the wake-up keepalive');
    assert.equal(requests.filter(isKeepalive)[1].status, 200, 'coming back to the tab counts as activity');

    for (const type of ['pageshow', 'online']) await page.evaluate((t) => window.dispatchEvent(new Event(t)), type);
    await sleep(200);
    assert.equal(requests.length, 3, 'the last success is fresh: no ping');

    await context.clock.setSystemTime((await now(page)) + 45000);
    await page.evaluate(() => window.dispatchEvent(new Event('online')));
    await waitFor(() => requests[3]?.status, 'the wake-up probe');
    // health_check_frequency is 1 here: an idle tab's probe of each tick reads the health.
    assert.equal(requests[3].path, '/health', 'back online without activity: a probe, the session is not extended');

    await context.clock.setSystemTime((await now(page)) + 4 * 60000);
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    await waitFor(async () => (await events(page, 'expired')).length === 1, 'expired on wake-up');
    assert.equal((await events(page, 'expired'))[0].reason, 'idle');
    await sleep(200);
    assert.equal(requests.length, 4, 'an expired session is not pinged back to life');
    await context.close();
  });
});

describe('the server agrees', { timeout: 60000 }, () => {
  it('an idle session really ends on the server (short real-time idle timeout)', async () => {
    const server = await startServer({ KEEPALIVE_TICK: '1s', KEEPALIVE_TIMEOUT: '500ms', KEEPALIVE_IDLE_TIMEOUT: '2s' });
    const browser = await launch();
    try {
      const { context, requests, page } = await started(browser, server);
      await advance(context, 3000, { step: 500 });
      assert.equal((await events(page, 'expired'))[0]?.reason, 'idle');
      assert.equal(requests.filter(isKeepalive).length, 1);
      await sleep(2500);
      const status = await page.evaluate(async () => (await fetch('/api/v1/keepalive/', { credentials: 'same-origin' })).status);
      assert.equal(status, 401, 'the server let the idle session expire');
      await context.close();
    } finally {
      await browser.close();
      await server.dispose();
    }
  });
});
