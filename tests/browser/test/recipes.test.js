// The framework recipes of examples/client (a React hook, a Vue composable, an Angular service),
// each in its demo app as built by `npm run build --prefix examples/client`, against the real
// server: the state the app shows, the ping on start, pause() and resume(), idle and active,
// unmounting (and React's StrictMode double mount), and logout.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../lib/server.js';
import { launch, newContext, advance, act, waitFor, isKeepalive } from '../lib/browser.js';

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '../../../examples/client/dist');
const TICK = 20000;
// The demos' idleTimeout option.
const IDLE = 60000;

const text = (page, selector) => page.locator(selector).innerText();

// Polls until `check` passes. Zoneless Angular renders from a timer, which the paused fake clock
// holds back: for it, the clock moves 1 ms at a time while waiting.
function until(ctx, check, what) {
  return waitFor(async () => {
    if (ctx.nudge) await ctx.context.clock.runFor(1);
    return check();
  }, what);
}

// Waits until `selector` shows `expected`.
async function shows(ctx, selector, expected) {
  let shown = null;
  try {
    await until(ctx, async () => {
      const element = ctx.page.locator(selector);
      shown = (await element.count()) ? await element.innerText() : null;
      return shown === expected;
    }, `${selector} to show ${expected}`);
  } catch (e) {
    throw new Error(`${e.message}; it shows ${shown}`);
  }
}

const keepalives = (requests) => requests.filter(isKeepalive);
const answered = (requests) => requests.every((r) => r.status || r.failed);

// One tick of a user at work: activity 2 s into it, then the rest of the tick.
async function workTick(ctx) {
  await advance(ctx.context, 2000);
  await act(ctx.page);
  await advance(ctx.context, TICK - 2000, { step: 2000 });
  await waitFor(() => answered(ctx.requests), 'the answers');
}

// Opens the demo from the server's origin (the session cookie is the server's), signs in through
// its button and waits for the first answer.
async function openDemo(browser, server, name) {
  const { context, requests } = await newContext(browser, server);
  await context.route(`${server.url}/recipes/*`, (route) =>
    route.fulfill({ path: join(DIST, basename(new URL(route.request().url()).pathname)) }));
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/401/.test(m.text())) problems.push(`console: ${m.text()}`); });
  await page.goto(`/recipes/${name}.html`);
  const ctx = { context, requests, page, problems, nudge: name === 'angular-zoneless' };
  await page.click('#sign-in');
  await shows(ctx, '#health', 'healthy');
  await waitFor(() => keepalives(requests).length === 1 && answered(requests), 'the start ping');
  return ctx;
}

const seconds = (shown) => {
  const [m, s] = shown.split(':').map(Number);
  return m * 60 + s;
};

const DEMOS = [
  ['react', 'React hook useKeepalive'],
  ['vue', 'Vue composable useKeepalive'],
  ['angular', 'Angular KeepaliveService (zone.js)'],
  ['angular-zoneless', 'Angular KeepaliveService (zoneless)'],
];

describe('framework recipes', { timeout: 900000 }, () => {
  let server, browser;

  before(async () => {
    if (!existsSync(join(DIST, 'react.js'))) throw new Error(`no demo build in ${DIST}: npm ci --prefix examples/client && npm run build --prefix examples/client`);
    // A tick other than the client's 30 s default shows that the apps show the server's answer.
    server = await startServer({ KEEPALIVE_TICK: '20s', KEEPALIVE_TIMEOUT: '5s' });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  for (const [name, recipe] of DEMOS) {
    describe(recipe, { timeout: 240000 }, () => {
      it('shows the server\'s answer, pings on start, counts down, and "Stay signed in" pings', async () => {
        const ctx = await openDemo(browser, server, name);
        const { context, requests, page } = ctx;
        assert.equal(keepalives(requests)[0].status, 200);
        assert.equal(await text(page, '#tick'), '20 s', 'the tick of the server, not the client default');
        assert.equal(await text(page, '#status'), 'running');
        assert.equal(await text(page, '#presence'), 'active');
        const left = seconds(await text(page, '#expires'));
        assert.ok(left > 590 && left <= 600, `the server's 10 min idle timeout: ${left} s`);

        await advance(context, 5000);
        await until(ctx, async () => seconds(await text(page, '#expires')) <= left - 4, 'the countdown');
        assert.ok(seconds(await text(page, '#expires')) >= left - 6);

        // Without moving the clock: the button alone sends it.
        await page.click('#extend');
        await waitFor(() => keepalives(requests).length === 2 && answered(requests), 'the extend ping');
        assert.equal(keepalives(requests)[1].status, 200);
        await until(ctx, async () => seconds(await text(page, '#expires')) >= 599, 'the countdown to restart');
        assert.deepEqual(ctx.problems, []);
        await context.close();
      });

      it('pause() stops every request and resume() pings again', async () => {
        const ctx = await openDemo(browser, server, name);
        const { context, requests, page } = ctx;
        await workTick(ctx);
        assert.equal(keepalives(requests).length, 2, 'a ping for the tick');

        await advance(context, 1000);
        await act(page);
        await page.click('#pause');
        await shows(ctx, '#status', 'paused');
        const sent = requests.length;
        // Two ticks of a user at work: a paused client neither pings nor probes.
        for (let n = 0; n < 2; n++) {
          await advance(context, 5000);
          await act(page);
          await advance(context, TICK - 5000, { step: 5000 });
        }
        assert.equal(requests.length, sent, `nothing sent while paused: ${JSON.stringify(requests.slice(sent).map((r) => r.path))}`);

        // Its last answer is older than a tick: resume() pings at once.
        await page.click('#resume');
        await shows(ctx, '#status', 'running');
        await waitFor(() => keepalives(requests).length === 3 && answered(requests), 'the ping on resume');
        assert.equal(keepalives(requests)[2].status, 200);
        await workTick(ctx);
        assert.equal(keepalives(requests).length, 4, 'a ping for the next tick');
        assert.deepEqual(ctx.problems, []);
        await context.close();
      });

      it('shows idle after a minute without activity, and active again on activity', async () => {
        const ctx = await openDemo(browser, server, name);
        const { context, requests, page } = ctx;
        await advance(context, IDLE - 4000, { step: 4000 });
        assert.equal(await text(page, '#presence'), 'active');
        await advance(context, 5000);
        await shows(ctx, '#presence', 'idle');
        assert.equal(keepalives(requests).length, 1, 'an idle user\'s session is not extended');
        // Probes (/livez) or health checks (/health): the server is watched without extending.
        assert.ok(requests.some((r) => ['/livez', '/health'].includes(r.path) && r.status === 200), 'the server is probed instead');

        await act(page);
        await shows(ctx, '#presence', 'active');
        await advance(context, TICK, { step: 2000 });
        await waitFor(() => keepalives(requests).length === 2 && answered(requests), 'the ping of a user who is back');
        assert.equal(keepalives(requests)[1].status, 200);
        assert.deepEqual(ctx.problems, []);
        await context.close();
      });

      const once = name === 'react' ? ', and StrictMode\'s double mount runs one client' : '';
      it(`sends one ping per tick, and none after the app unmounts${once}`, async () => {
        const ctx = await openDemo(browser, server, name);
        const { context, requests, page } = ctx;
        // openDemo waited for the start ping: a second client would have sent one too.
        for (let n = 2; n <= 4; n++) {
          await workTick(ctx);
          assert.equal(keepalives(requests).length, n, `one ping at tick ${n - 1}`);
        }
        await page.evaluate(() => window.demo.unmount());
        await until(ctx, async () => !(await page.locator('#health').count()), 'the app to unmount');
        const sent = requests.length;
        for (let n = 0; n < 3; n++) await workTick(ctx);
        assert.equal(requests.length, sent, `nothing sent after unmounting: ${JSON.stringify(requests.slice(sent).map((r) => r.path))}`);
        assert.deepEqual(ctx.problems, []);
        await context.close();
      });

      it('"Log out" ends the session on the server', async () => {
        const ctx = await openDemo(browser, server, name);
        const { context, requests, page } = ctx;
        await page.click('#logout');
        await shows(ctx, '#status', 'signed out');
        await waitFor(() => requests.find((r) => r.method === 'DELETE' && r.path === '/api/v1/session')?.status, 'the logout');
        assert.ok(requests.find((r) => r.method === 'DELETE').status < 300);
        const status = await page.evaluate(() => fetch('/api/v1/keepalive/').then((r) => r.status));
        assert.equal(status, 401, 'the session is gone');
        const pings = keepalives(requests).length;
        await workTick(ctx);
        assert.equal(keepalives(requests).length, pings, 'no ping after logout');
        assert.deepEqual(ctx.problems, []);
        await context.close();
      });
    });
  }

  it('Angular with zone.js: pointer moves reach the client outside the zone and run no change detection', async () => {
    const ctx = await openDemo(browser, server, 'angular');
    const { page } = ctx;
    const renders = () => page.evaluate(() => window.demo.renders());
    const before = await renders();
    // Each of these reaches the client's pointermove listener, which records activity.
    for (let n = 0; n < 10; n++) await act(page);
    assert.equal(await renders(), before, 'no render for pointer moves');
    assert.ok(before > 0);
    await ctx.context.close();
  });
});
