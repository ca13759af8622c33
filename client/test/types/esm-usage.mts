// Compiled by test/package.test.js under moduleResolution nodenext: an ES module in Node (SSR, tests).
import createKeepalive, { createKeepalive as named, type Keepalive } from 'keepalive-client';

const client: Keepalive = named({ probeUrl: null });
const other: Keepalive = createKeepalive();
client.on('ping', ({ ok, keep, attempt }) => console.log(ok, keep, attempt));
void other;
// @ts-expect-error: start() takes the sign-in answer, not a string
client.start('now');
