// Takes the screenshots in docs/screenshots from the real demo page served by the real server:
// `npm run screenshots` after `cargo build`. Each state is reached the way a user would reach it,
// with the fake clock standing in for the minutes of waiting.

import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startServer } from './lib/server.js';
import { launch, newContext, advance, act, waitFor } from './lib/browser.js';

const OUT = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));
const VIEWPORTS = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 800 } };

async function demo(browser, server, viewport) {
  const { context } = await newContext(browser, server, { viewport });
  const page = await context.newPage();
  await page.goto('/');
  await waitFor(async () => (await page.locator('#badge').innerText()) !== 'checking…', 'the first answer');
  return { context, page };
}

async function signIn(page) {
  await page.fill('#name', 'ada');
  await page.click('#sign-in button[type=submit]');
  await page.locator('#signed-in').waitFor({ state: 'visible' });
}

// A few ticks of a user at work (a move every few seconds), so the page shows pings and events.
async function work(context, page) {
  await advance(context, 64000, { step: 2000, each: async (t) => { if (t % 6000 === 0) await act(page); } });
}

async function shoot(page, name, kind) {
  await page.screenshot({ path: `${OUT}${name}-${kind}.png`, fullPage: kind === 'phone' });
  console.log(`docs/screenshots/${name}-${kind}.png`);
}

mkdirSync(OUT, { recursive: true });
const browser = await launch();
const healthy = await startServer();
const degraded = await startServer({ KEEPALIVE_MEMORY_WARNING: '0.1', KEEPALIVE_MEMORY_CRITICAL: '99', KEEPALIVE_HEALTH_INTERVAL: '200ms' });
try {
  for (const [kind, viewport] of Object.entries(VIEWPORTS)) {
    let { context, page } = await demo(browser, healthy, viewport);
    await shoot(page, 'signed-out', kind);
    await signIn(page);
    await work(context, page);
    await shoot(page, 'healthy', kind);

    while (!(await page.locator('#stay').isVisible())) await advance(context, 5000, { step: 5000 });
    await advance(context, 17000);
    await shoot(page, 'stay-signed-in', kind);
    await page.click('#stay-extend');
    await page.locator('#stay').waitFor({ state: 'hidden' });

    await healthy.kill();
    await advance(context, 60000, { step: 1000, each: async (t) => { if (t % 5000 === 0) await act(page); } });
    await waitFor(async () => (await page.locator('#badge').innerText()) === 'disconnected', 'disconnected');
    await shoot(page, 'disconnected', kind);
    await healthy.restart();
    await context.close();

    ({ context, page } = await demo(browser, degraded, viewport));
    await signIn(page);
    await work(context, page);
    await shoot(page, 'degraded', kind);
    await context.close();
  }
} finally {
  await browser.close();
  await healthy.dispose();
  await degraded.dispose();
}
