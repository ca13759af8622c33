// Compiled by test/package.test.js under moduleResolution nodenext: a CommonJS module.
import keepalive = require('keepalive-client');

const client: keepalive.Keepalive = keepalive.createKeepalive({ warnBefore: 30_000 });
const viaDefault: keepalive.Keepalive = keepalive.default();
client.on('expired', ({ reason }) => console.log(reason));
void viaDefault;
// @ts-expect-error: no such option
keepalive.createKeepalive({ tickMs: 1 });
