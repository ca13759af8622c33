// Compiled by test/package.test.js: the same client through the global a classic <script> defines.
import type {} from '../../../web/keepalive.js';

const client = globalThis.createKeepalive({ probeUrl: null });
client.on('disconnected', ({ error, lastOkAt }) => console.log(error, lastOkAt));
client.on('reconnected', ({ downtime }) => console.log(downtime));
// @ts-expect-error: extend() takes no argument
client.extend(5);
