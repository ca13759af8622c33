// Compiled by test/package.test.js: the client through the global the classic-script build defines.
/// <reference types="keepalive-client/global" />

const client = globalThis.createKeepalive({ probeUrl: null });
client.on('disconnected', ({ error, lastOkAt }) => console.log(error, lastOkAt));
client.on('reconnected', ({ downtime }) => console.log(downtime));
// @ts-expect-error: extend() takes no argument
client.extend(5);
