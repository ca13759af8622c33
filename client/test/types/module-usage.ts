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

// The controls: credentials, headers (a value or a function, sync or async), a fetch, presence.
const tuned = createKeepalive({
  url: 'https://keepalive.example/api/v1/keepalive/',
  credentials: 'include',
  headers: async ({ url, method }) => ({ 'x-csrf-token': `${method} ${url}` }),
  fetch: (input, init) => fetch(input, init),
  idleTimeout: 5 * 60_000,
  activityEvents: ['keydown', 'pointerdown'],
  activityTarget: document.body,
  activityThrottle: 500,
  debug: (message, details) => console.log(message, details),
});
tuned.on('idle', ({ idleFor }) => { const ms: number = idleFor; void ms; });
tuned.on('active', ({ idleFor }) => { const ms: number = idleFor; void ms; });
tuned.pause();
tuned.resume();
const paused: boolean = tuned.state.paused;
const idle: boolean = tuned.state.idle;
void paused; void idle;
createKeepalive({ headers: { authorization: 'Bearer t' }, debug: true, healthUrl: null });
// @ts-expect-error: credentials is a fetch credentials mode
createKeepalive({ credentials: 'always' });
// @ts-expect-error: header values are strings
createKeepalive({ headers: { 'x-n': 1 } });
// @ts-expect-error: pause() takes no argument
tuned.pause(1000);
