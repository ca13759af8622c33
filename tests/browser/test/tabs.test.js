// Several tabs of one site: one tab pings for all, results and activity reach every tab, another
// tab takes over when the pinging one closes, and a logout in any tab ends the session in all of
// them. Run with Web Locks and BroadcastChannel, then with both taken away (lease and storage events).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { launch, newContext, openClient, signIn, advance, act, events, state, waitFor, isKeepalive } from '../lib/browser.js';

const WITHOUT_LOCKS_OR_CHANNEL = () => {
  Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined, configurable: true });
  delete window.BroadcastChannel;
};

async function twoTabs(browser, server, init) {
  const { context, requests } = await newContext(browser, server);
  if (init) await context.addInitScript(init);
  const a = await openClient(context);
  const b = await openClient(context);
  await signIn(a);
  for (const page of [a, b]) {
    await page.evaluate(() => window.client.start());
    await waitFor(async () => (await events(page, 'ping')).some((p) => p.keep), 'the start ping');
  }
  return { context, requests, a, b };
}

// One tick with the user working in `page`: returns the keepalive requests the tick caused.
async function tick(context, requests, page) {
  const before = requests.filter(isKeepalive).length;
  await advance(context, 2000);
  await act(page);
  await advance(context, 28000, { step: 2000 });
  await waitFor(() => requests.filter(isKeepalive).slice(before).every((r) => r.status), 'answers');
  return requests.filter(isKeepalive).slice(before);
}

for (const [mode, init] of [['Web Locks and BroadcastChannel', null], ['a localStorage lease and storage events', WITHOUT_LOCKS_OR_CHANNEL]]) {
  describe(`two tabs, with ${mode}`, { timeout: 120000 }, () => {
    let server, browser;

    before(async () => {
      server = await startServer();
      browser = await launch();
    });

    after(async () => {
      await browser?.close();
      await server?.dispose();
    });

    it('make one ping per tick, shared with both tabs, and hand over when the pinging tab closes', async () => {
      const { context, requests, a, b } = await twoTabs(browser, server, init);
      if (init) assert.equal(await a.evaluate(() => !!navigator.locks || 'BroadcastChannel' in window), false);

      // Without a lock, two tabs whose ticks fall at the same instant may both claim the lease once
      // (localStorage reaches other renderer processes a moment later); the next tick settles it.
      await tick(context, requests, b);
      await tick(context, requests, b);
      const leaders = [(await state(a)).leader, (await state(b)).leader];
      assert.equal(leaders.filter(Boolean).length, 1, `exactly one leader: ${leaders}`);
      const [leader, follower] = leaders[0] ? [a, b] : [b, a];

      for (let n = 0; n < 3; n++) {
        // Activity in the follower tab is what keeps the session alive here.
        const sent = await tick(context, requests, follower);
        assert.equal(sent.length, 1, `tick ${n}: one ping for two tabs`);
        assert.equal(sent[0].page, leader, 'sent by the leading tab');
        assert.equal(sent[0].status, 200);
      }
      const [sa, sb] = [await state(a), await state(b)];
      assert.equal(sa.lastPingAt, sb.lastPingAt, 'both tabs know the last ping');
      assert.equal(sa.expiresAt, sb.expiresAt, 'both tabs know the expiry');
      const followerPings = (await events(follower, 'ping')).filter((p) => p.keep);
      assert.ok(followerPings.length >= 4, 'the follower hears every result');

      await leader.close();
      const sent = [];
      for (let n = 0; n < 3; n++) sent.push(...await tick(context, requests, follower));
      assert.ok(sent.length >= 2 && sent.length <= 3, `the remaining tab pings each tick (${sent.length})`);
      assert.ok(sent.every((r) => r.page === follower && r.status === 200));
      assert.equal((await state(follower)).leader, true);
      await context.close();
    });

    it('share the warning, an extend() made in either tab, and a 401 seen by the pinging tab', async () => {
      const { context, requests, a, b } = await twoTabs(browser, server, init);
      await advance(context, 545000, { step: 5000 });
      assert.deepEqual([(await state(a)).expiring, (await state(b)).expiring], [true, true], 'both tabs ask');
      const follower = (await state(a)).leader ? b : a;
      assert.equal(await follower.evaluate(() => window.client.extend()), true);
      await waitFor(async () => !(await state(a)).expiring && !(await state(b)).expiring, 'both tabs extended');
      assert.equal((await state(a)).expiresAt, (await state(b)).expiresAt);

      await a.evaluate(() => fetch('/api/v1/session', { method: 'DELETE', credentials: 'same-origin' }));
      await tick(context, requests, follower);
      for (const page of [a, b]) {
        await waitFor(async () => (await events(page, 'expired')).length === 1, 'expired in both tabs');
        assert.equal((await events(page, 'expired'))[0].reason, 'server');
      }
      assert.equal(requests.filter(isKeepalive).at(-1).status, 401);
      await context.close();
    });

    it('both see a logout made in either tab', async () => {
      const { context, requests, a, b } = await twoTabs(browser, server, init);
      await tick(context, requests, a);
      const follower = (await state(a)).leader ? b : a;
      await follower.evaluate(() => window.client.logout());
      for (const page of [a, b]) {
        await waitFor(async () => (await events(page, 'expired')).length === 1, 'expired in both tabs');
        assert.equal((await events(page, 'expired'))[0].reason, 'logout');
        assert.equal((await state(page)).running, false);
      }
      await waitFor(() => requests.find((r) => r.method === 'DELETE')?.status, 'the logout request');
      assert.equal(requests.find((r) => r.method === 'DELETE').status, 204);
      const count = requests.length;
      await tick(context, requests, a);
      assert.equal(requests.length, count, 'no tab pings after logout');
      const status = await a.evaluate(async () => (await fetch('/api/v1/keepalive/', { credentials: 'same-origin' })).status);
      assert.equal(status, 401, 'the server ended the session');
      await context.close();
    });
  });
}
