// Compiled by test/package.test.js in a project that installed the packed tarball: how an app that
// bundles the client uses it (moduleResolution bundler). Each @ts-expect-error fails the compile if
// the declarations grow too loose.
import createKeepalive, { createKeepalive as named, type KeepaliveState, type HealthStatus } from 'keepalive-client';

const client = createKeepalive({ url: '/api/v1/keepalive?app=shop', params: { tab: 'cart', n: 2 }, warnBefore: 90_000 });
const same: typeof createKeepalive = named;
void same;
const off = client.on('expiring', ({ secondsLeft, final }) => {
  const left: number = secondsLeft;
  const last: boolean = final;
  void left; void last;
});
off();
client.on('health', (e) => { const s: HealthStatus = e.status; void s; });
client.on('expired', (e) => { if (e.reason === 'logout') client.stop(); });
client.start();
const ok: Promise<boolean> = client.extend();
void ok;
const state: Readonly<KeepaliveState> = client.state;
const left: number | null = state.expiresIn;
void left;

// @ts-expect-error: no such event
client.on('expire', () => {});
// @ts-expect-error: the state is read-only
client.state.running = false;
// @ts-expect-error: options are typed
createKeepalive({ tick: '30s' });
