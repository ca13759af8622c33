// The demo page as the server serves it (with its Content-Security-Policy): sign in, the status
// badge in each state, last and next ping, the countdown, "Stay signed in?" and sign out.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { launch, newContext, advance, act, waitFor, isKeepalive } from '../lib/browser.js';

const text = (page, selector) => page.locator(selector).innerText();
const badge = (page) => text(page, '#badge');

// Opens `/` and records anything the page or its policy complains about.
async function openDemo(browser, server) {
  const { context, requests } = await newContext(browser, server, { viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/401/.test(m.text())) problems.push(`console: ${m.text()}`); });
  const response = await page.goto('/');
  assert.match(response.headers()['content-security-policy'] || '', /default-src 'self'/, 'served with its CSP');
  await waitFor(async () => (await badge(page)) !== 'checking…', 'the first answer');
  return { context, requests, page, problems };
}

async function signInThroughForm(page) {
  await page.fill('#name', 'ada');
  await page.click('#sign-in button[type=submit]');
  await page.locator('#signed-in').waitFor({ state: 'visible' });
}

describe('the demo page', { timeout: 120000 }, () => {
  let server, browser;

  before(async () => {
    server = await startServer();
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('offers the client as an ES module with named and default exports, under the page\'s CSP', async () => {
    const { context, page, problems } = await openDemo(browser, server);
    const exported = await page.evaluate(async () => {
      const module = await import('/keepalive.mjs');
      return {
        named: typeof module.createKeepalive,
        same: module.default === module.createKeepalive,
        running: module.createKeepalive().state.running,
      };
    });
    assert.deepEqual(exported, { named: 'function', same: true, running: false });
    assert.deepEqual(problems, []);
    await context.close();
  });

  it('signs in, shows health, pings, countdown and the tab role, and signs out', async () => {
    const { context, requests, page, problems } = await openDemo(browser, server);
    assert.equal(await page.locator('#signed-out').isVisible(), true, 'a first visit shows the sign-in form');
    assert.equal(await badge(page), 'healthy', 'health is known before sign-in, from the 401 answer');
    assert.equal(await page.locator('#notice').isVisible(), false, 'no "session ended" on a first visit');

    await signInThroughForm(page);
    assert.match(await text(page, '#server'), /^healthy \(redis disabled, memory ok\)$/);
    assert.match(await text(page, '#countdown'), /^(10:00|9:59)$/);
    await advance(context, 1000);
    assert.match(await text(page, '#role'), /pings for every open tab/, 'the lock is granted within a render');

    await advance(context, 1000);
    await act(page);
    await advance(context, 28000, { step: 2000 });
    await waitFor(() => requests.filter(isKeepalive).at(-1)?.status === 200 && requests.filter(isKeepalive).length === 2, 'a tick');
    await advance(context, 1000);
    assert.match(await text(page, '#last-ping'), /\(0:01 ago\)$/);
    assert.match(await text(page, '#next-ping'), /\(in 0:29\)$/);
    assert.match(await text(page, '#countdown'), /^9:59$/);
    assert.equal(await text(page, '#presence'), 'here');

    await page.click('#sign-out');
    await page.locator('#signed-out').waitFor({ state: 'visible' });
    assert.equal(await text(page, '#notice'), 'You signed out.');
    assert.equal(requests.find((r) => r.method === 'DELETE')?.path, '/api/v1/session');
    assert.deepEqual(problems, []);
    await context.close();
  });

  it('asks "Stay signed in?" before an idle session ends, and keeps it when asked', async () => {
    const { context, requests, page, problems } = await openDemo(browser, server);
    await signInThroughForm(page);
    await advance(context, 541000, { step: 5000 });
    const dialog = page.locator('#stay');
    assert.equal(await dialog.isVisible(), true);
    assert.match(await text(page, '#stay-title'), /Stay signed in\?/);
    assert.equal(await text(page, '#stay-seconds'), '59');
    assert.match(await text(page, '#presence'), /^away for 9:0\d: the session is no longer extended$/);
    assert.match(await text(page, '#events'), /you went idle/);
    const sent = requests.filter(isKeepalive).length;

    await page.click('#stay-extend');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(requests.filter(isKeepalive).length, sent + 1);
    assert.match(await text(page, '#countdown'), /^(10:00|9:59)$/);
    assert.equal(await text(page, '#presence'), 'here', '"Stay signed in" counts as the user being back');
    assert.deepEqual(problems, []);
    await context.close();
  });

  it('signs the user out when the question goes unanswered', async () => {
    const { context, page } = await openDemo(browser, server);
    await signInThroughForm(page);
    await advance(context, 601000, { step: 5000 });
    await page.locator('#signed-out').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#stay').isVisible(), false);
    assert.match(await text(page, '#notice'), /Your session has ended/);
    await context.close();
  });

  it('shows disconnected when the server is lost and healthy again when it is back', async () => {
    const { context, page, problems } = await openDemo(browser, server);
    await signInThroughForm(page);
    await server.kill();
    const busy = async (t) => { if (t % 5000 === 0) await act(page); };
    await advance(context, 60000, { step: 1000, each: busy });
    assert.equal(await badge(page), 'disconnected');
    assert.match(await text(page, '#server'), /unreachable/);

    await server.restart();
    await advance(context, 31000, { step: 1000, each: busy });
    await waitFor(async () => (await badge(page)) === 'healthy', 'healthy again');
    assert.match(await text(page, '#events'), /server back after/);
    assert.deepEqual(problems.filter((p) => !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(p)), []);
    await context.close();
  });
});

for (const [health, warning, critical] of [['degraded', '0.1', '99'], ['critical', '0.1', '0.2']]) {
  describe(`a ${health} server`, { timeout: 60000 }, () => {
    it(`shows ${health} on the badge`, async () => {
      const server = await startServer({
        KEEPALIVE_MEMORY_WARNING: warning, KEEPALIVE_MEMORY_CRITICAL: critical, KEEPALIVE_HEALTH_INTERVAL: '200ms',
      });
      const browser = await launch();
      try {
        const { context, page } = await openDemo(browser, server);
        assert.equal(await badge(page), health);
        assert.match(await page.locator('#badge').getAttribute('class'), new RegExp(`\\b${health}\\b`));
        await signInThroughForm(page);
        assert.match(await text(page, '#server'), new RegExp(`^${health} \\(redis disabled, memory (warning|critical)\\)$`));
        await context.close();
      } finally {
        await browser.close();
        await server.dispose();
      }
    });
  });
}
