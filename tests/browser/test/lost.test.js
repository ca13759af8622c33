// A lost server: retries with exponential backoff and full jitter, `disconnected` within 60 s of
// fake time, one try per tick while it is away, and `reconnected` when it comes back. Math.random is
// pinned near 1 so each jittered delay sits at its cap (1 s, 2 s, 4 s) and the backoff is visible.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { launch, newContext, openClient, signIn, advance, act, events, state, now, waitFor, isKeepalive } from '../lib/browser.js';

const RANDOM = 0.999;

async function activeClient(browser, server) {
  const { context, requests } = await newContext(browser, server);
  await context.addInitScript((r) => { Math.random = () => r; }, RANDOM);
  const page = await openClient(context);
  await signIn(page);
  await page.evaluate(() => window.client.start());
  await waitFor(async () => (await events(page, 'ping')).length === 1, 'the first ping');
  // One regular tick with the user at work, so the last success is a tick-time keepalive.
  await advance(context, 2000);
  await act(page);
  await advance(context, 28000, { step: 2000 });
  await waitFor(async () => (await events(page, 'ping')).length === 2, 'the second ping');
  return { context, requests, page };
}

// Keeps the user busy (a pointer move every 5 s of fake time) while the clock runs.
const busy = (page) => async (elapsed) => { if (elapsed % 5000 === 0) await act(page); };

describe('a lost server', { timeout: 120000 }, () => {
  let browser;
  before(async () => { browser = await launch(); });
  after(async () => { await browser?.close(); });

  it('killed: retries with backoff, reports disconnected within 60 s, reconnects when back', async () => {
    const server = await startServer();
    try {
      const { context, requests, page } = await activeClient(browser, server);
      const lostAt = await now(page);
      await server.kill();

      await advance(context, 40000, { step: 250, each: busy(page) });
      const [lost] = await events(page, 'disconnected');
      assert.ok(lost, 'disconnected was emitted');
      assert.ok(lost.at - lostAt <= 60000, `disconnected ${lost.at - lostAt} ms after the server died`);

      const failed = (await events(page, 'ping')).filter((p) => !p.ok);
      assert.equal(failed.length, 4, 'the try and maxRetries (3) retries');
      assert.ok(failed.every((p) => p.keep), 'the active user keeps asking for a keepalive');
      const gaps = failed.slice(1).map((p, i) => p.at - failed[i].at);
      [1000, 2000, 4000].forEach((cap, i) => {
        assert.ok(Math.abs(gaps[i] - cap * RANDOM) < 5, `retry ${i + 1} after ${gaps[i]} ms, cap ${cap}`);
      });
      assert.ok(lost.at >= failed[3].at, 'reported after the last retry');
      assert.equal((await state(page)).connected, false);

      // While away: one try per tick, no retry storm.
      await advance(context, 30000, { step: 1000, each: busy(page) });
      assert.equal((await events(page, 'ping')).filter((p) => !p.ok).length, 5);

      await server.restart();
      await advance(context, 31000, { step: 1000, each: busy(page) });
      const [back] = await events(page, 'reconnected');
      assert.ok(back, 'reconnected was emitted');
      assert.ok(back.downtime > 0);
      const s = await state(page);
      assert.equal(s.connected, true);
      assert.equal(s.expired, false, 'the session survived the restart');
      assert.equal(requests.filter(isKeepalive).at(-1).status, 200);
      assert.deepEqual(await events(page, 'expired'), []);
      await context.close();
    } finally {
      await server.dispose();
    }
  });

  it('frozen: each try ends at the timeout (AbortController), disconnected before the next tick', async () => {
    const server = await startServer();
    try {
      const { context, page } = await activeClient(browser, server);
      const lostAt = await now(page);
      server.freeze();

      await advance(context, 60000, { step: 1000, cap: 200, each: busy(page) });
      const [lost] = await events(page, 'disconnected');
      assert.ok(lost, 'disconnected was emitted');
      assert.ok(lost.at - lostAt <= 60000, `disconnected ${lost.at - lostAt} ms after the server froze`);
      const failed = (await events(page, 'ping')).filter((p) => !p.ok);
      // 8 s timeouts: a third retry could not end before the next tick, so the client stops at three tries.
      assert.equal(failed.length, 3);
      assert.ok(failed.every((p) => /abort/i.test(p.error)), failed.map((p) => p.error).join(' | '));
      assert.ok(lost.at - failed[0].at <= 30000, 'given up within one tick');

      server.thaw();
      await advance(context, 31000, { step: 1000, each: busy(page) });
      await waitFor(async () => (await events(page, 'reconnected')).length === 1, 'reconnected');
      assert.equal((await state(page)).connected, true);
      await context.close();
    } finally {
      await server.dispose();
    }
  });
});
