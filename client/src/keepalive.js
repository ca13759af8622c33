/**
 * keepalive-client: keeps a server session alive while its user is active, and tells the page how
 * the server is doing.
 *
 * The server is the source of truth: tick, timeout and retry count come from its keepalive answer,
 * and the session's remaining time is taken from `expiresAt - serverTime`, measured from the moment
 * the answer arrived, so a page clock that is wrong (or faked in tests) does not matter.
 *
 * Several tabs of one site share one client's work: the tab holding a Web Lock (or, without Web
 * Locks, a lease in localStorage) pings; results, activity, logout and expiry travel between tabs on
 * a BroadcastChannel (or storage events).
 *
 * Nothing here touches the browser before `start()` (or `logout()`): importing the module and
 * creating a client work in Node, for server-side rendering and tests.
 */

// Events that show a person is at the page (the `activityEvents` default).
const ACTIVITY = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'focus'];
// Moments a throttled or frozen tab comes back; a stale tab pings at once. `focus` of the window
// itself (switching back to the browser) also counts as activity, whatever the activity target.
const WAKE = ['pageshow', 'online', 'focus'];
// /health's statuses (draft-inadarei-api-health-check) in the words of the keepalive answer.
const HEALTH = { pass: 'healthy', warn: 'degraded', fail: 'critical' };
// Read at each call, so that fake clocks installed after the import still apply.
const now = () => Date.now();
const noop = () => {};

/**
 * Creates a keepalive client. Nothing happens until `start()`.
 * @param {object} [options] see keepalive.d.ts for every option and its default
 * @returns {object} the client: `start`, `stop`, `pause`, `resume`, `extend`, `logout`, `on`, `off`, `state`
 */
export function createKeepalive(options = {}) {
  const o = options;
  const or = (value, fallback) => (value == null ? fallback : value);
  const warnBefore = or(o.warnBefore, 60000);
  const retryBase = o.retryBase || 1000;
  const throttle = or(o.activityThrottle, 1000);
  const debug = o.debug === true ? (message, details) => console.debug('keepalive: ' + message, details || '') : o.debug || noop;
  const id = Math.random().toString(36).slice(2);
  const handlers = {};

  const s = {
    running: false, paused: false, idle: false, leader: false, connected: true, expiring: false, expired: false,
    health: 'unknown', checks: null,
    tick: o.tick || 30000, timeout: o.timeout || 8000,
    maxRetries: or(o.maxRetries, 3), healthCheckFrequency: 0,
    lastPingAt: 0, lastOkAt: 0, lastAttemptAt: 0, lastHealthAt: 0, nextPingAt: 0, disconnectedAt: 0,
    lastActivityAt: now(), expiresAt: 0, absoluteExpiresAt: 0, idleTimeout: 0, error: null
  };
  let root, doc, nav, target, pingUrl, probeUrl, healthUrl, sessionUrl, name;
  let tickTimer, countdownTimer, idleTimer, sleepTimer, wakeSleeper, inflight, busy, channel, lockAbort, release, told, toldAt;

  // Started and not paused: pinging, counting down and listening.
  const live = () => s.running && !s.paused;
  // How long without activity makes the user idle: one tick by default, the moment from which the
  // client no longer extends the session.
  const idleAfter = () => o.idleTimeout || s.tick;

  // The browser is looked at here, on first use, never at import or creation.
  function setup() {
    if (root) return;
    root = globalThis;
    doc = root.document;
    nav = root.navigator || {};
    const base = root.location ? root.location.href : 'http://localhost/';
    pingUrl = new URL(o.url || '/api/v1/keepalive/', base);
    // Extra parameters go through URLSearchParams: the old client glued them on with '&' and got 404s.
    new URLSearchParams(o.params || {}).forEach((v, k) => pingUrl.searchParams.set(k, v));
    probeUrl = o.probeUrl === null ? null : new URL(o.probeUrl || '/livez', base);
    healthUrl = o.healthUrl === null ? null : new URL(o.healthUrl || '/health', base);
    sessionUrl = new URL(o.sessionUrl || '/api/v1/session', base);
    target = o.activityTarget || doc;
    name = 'keepalive:' + pingUrl.pathname;
  }

  function emit(type, data) {
    // A copy, so a handler that unsubscribes (or subscribes) does not disturb this dispatch.
    (handlers[type] || []).slice().forEach((h) => {
      try { h(data); } catch (e) { setTimeout(() => { throw e; }); }
    });
  }

  function send(msg) {
    if (root.BroadcastChannel) return channel && channel.postMessage(msg);
    try { localStorage.setItem(name, JSON.stringify([msg, Math.random()])); } catch (e) { /* no storage: one tab */ }
  }

  function receive(msg) {
    if (!msg || !s.running) return;
    if (msg.t == 'p') merge(msg.p);
    if (msg.t == 'a' && msg.at > s.lastActivityAt && !s.expiring) present(msg.at);
    if (msg.t == 'x') expire(msg.reason, true);
  }

  function onStorage(e) {
    if (e.key == name && e.newValue) try { receive(JSON.parse(e.newValue)[0]); } catch (x) { /* not ours */ }
  }

  // With Web Locks the lock decides; otherwise a lease in localStorage that the leader renews each tick.
  function lead() {
    if (nav.locks) return s.leader;
    try {
      const key = name + ':lease', lease = JSON.parse(localStorage.getItem(key) || '{}');
      if (lease.id != id && lease.until > now()) return (s.leader = false);
      // Renewed every tick; a leader whose timers the browser throttles loses it to a livelier tab.
      localStorage.setItem(key, JSON.stringify({ id, until: now() + s.tick + s.timeout }));
    } catch (e) { /* no storage: every tab pings for itself */ }
    return (s.leader = true);
  }

  function schedule(delay) {
    clearTimeout(tickTimer);
    tickTimer = setTimeout(onTick, delay);
    s.nextPingAt = now() + delay;
  }

  function onTick() {
    schedule(s.tick);
    const since = now() - s.lastAttemptAt, leader = lead();
    // Someone tried lately (extend, wake-up): skip. A follower steps in when the leader has been
    // silent for two ticks (a frozen or throttled tab).
    if (since < s.tick / 2 || !leader && since < 2 * s.tick + s.timeout) return debug('tick: skipped', { leader, since });
    cycle();
  }

  // Ends early when the client stops, so that a stopped client is never left waiting on it.
  function sleep(ms) {
    return new Promise((r) => { wakeSleeper = r; sleepTimer = setTimeout(r, ms); });
  }

  // Every request goes through here: the application's credentials mode, headers and fetch. The
  // headers function runs for each request, so a token that changes is always the current one;
  // fetch is looked up at each call, so a page that wraps it later is still heard.
  async function request(url, method, signal) {
    const h = o.headers;
    const headers = Object.assign({ accept: 'application/json' }, await (typeof h == 'function' ? h({ url: url.href, method }) : h));
    return (o.fetch || fetch)(url.href, { method, signal, headers, cache: 'no-store', credentials: o.credentials || 'same-origin' });
  }

  // One ping: a keepalive (kind 1) when the user was active since the last one, else a probe (0)
  // or, when the health is `healthCheckFrequency` ticks old, a look at /health (2), which keep
  // watch on the server without extending the session.
  async function attempt(kind, n) {
    const ac = (inflight = new AbortController());
    const timer = setTimeout(() => ac.abort(), s.timeout);
    const at = (s.lastAttemptAt = now()), keep = kind == 1;
    let p;
    try {
      const res = await request(keep ? pingUrl : kind ? healthUrl : probeUrl, 'GET', ac.signal);
      if (keep && res.status == 401) {
        const data = await res.json().catch(noop);
        merge({ health: data && data.serverHealth, connected: true, lastOkAt: now(), lastHealthAt: now() });
        expire('server');
        return true;
      }
      // /health answers 503 when the server is critical: an answer all the same.
      if (!res.ok && !(kind == 2 && res.status == 503)) throw new Error('HTTP ' + res.status);
      p = answer(keep && await res.json(), at, n);
      if (kind == 2) {
        const status = HEALTH[(await res.json()).status];
        if (!status) throw new Error('unexpected answer');
        p.health = { status, checks: null };
        p.lastHealthAt = p.lastOkAt;
      }
    } catch (e) {
      if (live()) report({ ok: false, keep, at, attempt: n, error: String(e.message || e) });
      throw e;
    } finally {
      clearTimeout(timer);
    }
    if (live()) report(p);
    return true;
  }

  // Turns a server answer (keepalive or sign-in) into a patch of shared state, in page-clock time.
  function answer(data, at, n) {
    const t = now(), p = { ok: true, keep: !!data, at, attempt: n || 0, connected: true, lastOkAt: t };
    if (data) {
      const off = t - Date.parse(data.serverTime), ses = data.session || {}, ka = data.keepalive || {};
      p.lastPingAt = p.lastHealthAt = t;
      p.expiresAt = Date.parse(ses.expiresAt) + off;
      p.absoluteExpiresAt = Date.parse(ses.absoluteExpiresAt) + off;
      p.idleTimeout = ses.idleTimeoutMs;
      p.tick = ka.tickMs; p.timeout = ka.timeoutMs; p.maxRetries = ka.maxRetries;
      p.healthCheckFrequency = ka.healthCheckFrequency;
      p.health = data.serverHealth;
      // A malformed time would make the countdown spin; better to count it as a failed ping.
      if (!(p.expiresAt > 0)) throw new Error('unexpected answer');
    }
    return p;
  }

  function report(p) {
    merge(p);
    send({ t: 'p', p });
  }

  // Applies a patch from this tab or another one, and emits what changed.
  function merge(p) {
    const tick = s.tick, h = p.health;
    ['lastPingAt', 'lastOkAt', 'lastHealthAt', 'expiresAt', 'absoluteExpiresAt', 'idleTimeout', 'tick', 'timeout',
      'maxRetries', 'healthCheckFrequency', 'error'].forEach((k) => { if (p[k] != null) s[k] = p[k]; });
    if (p.at > s.lastAttemptAt) s.lastAttemptAt = p.at;
    if (p.lastPingAt) told = false;
    if (h && h.status && h.status != s.health) {
      const previous = s.health;
      s.health = h.status; s.checks = h.checks;
      debug('health: ' + h.status, h);
      emit('health', { status: h.status, checks: h.checks, previous });
    } else if (h && h.checks) s.checks = h.checks;
    if (p.connected === false && s.connected) {
      s.connected = false; s.disconnectedAt = now();
      emit('disconnected', { error: p.error, lastOkAt: s.lastOkAt });
    }
    if (p.connected && !s.connected) {
      s.connected = true; s.error = null;
      emit('reconnected', { downtime: now() - s.disconnectedAt });
    }
    if (p.at) emit('ping', p);
    if (s.tick != tick && live()) schedule(s.tick);
    if (p.expiresAt) countdown();
  }

  // Gives up after maxRetries, or when the next try could not end before the next tick: that keeps
  // a lost server reported within two ticks (60 s with the usual 30 s tick).
  async function run(force) {
    const start = now();
    for (let n = 0; ; n++) {
      // An idle user's session is not extended, even with activity since the last ping.
      const kind = force || s.lastActivityAt > s.lastPingAt && !s.idle ? 1
        : healthUrl && s.healthCheckFrequency && now() - s.lastHealthAt > (s.healthCheckFrequency - 0.5) * s.tick ? 2
          : probeUrl ? 0 : -1;
      debug(['idle: nothing to send', 'probe', 'keepalive', 'health check'][kind + 1], { attempt: n, lastActivityAt: s.lastActivityAt });
      if (kind < 0) return false;
      try {
        return await attempt(kind, n);
      } catch (e) {
        const delay = Math.random() * Math.min(s.tick / 2, retryBase * 2 ** n), error = String(e.message || e);
        if (!live()) return false;
        if (!s.connected || n >= s.maxRetries || now() + delay + s.timeout > start + s.tick) {
          debug('disconnected', { error });
          report({ connected: false, error });
          return false;
        }
        debug('retry', { delay, error });
        await sleep(delay);
        if (!live()) return false;
      }
    }
  }

  async function cycle(force) {
    while (busy) {
      if (!force) return busy;
      await busy;
    }
    busy = run(force);
    try { return await busy; } finally { busy = null; }
  }

  function countdown() {
    clearTimeout(countdownTimer);
    if (!live() || !s.expiresAt) return;
    const left = s.expiresAt - now(), warn = Math.min(warnBefore, s.idleTimeout / 2 || warnBefore);
    if (left <= 0) return expire('idle');
    s.expiring = left <= warn;
    if (s.expiring) {
      emit('expiring', { secondsLeft: Math.ceil(left / 1000), final: s.expiresAt >= s.absoluteExpiresAt });
      countdownTimer = setTimeout(countdown, left % 1000 || 1000);
    } else countdownTimer = setTimeout(countdown, Math.min(left - warn, 864e5));
  }

  // Watches for the user going idle: re-armed from the last activity each time it fires.
  function watch() {
    clearTimeout(idleTimer);
    if (!live() || s.idle) return;
    const idleFor = now() - s.lastActivityAt, left = idleAfter() - idleFor;
    if (left > 0) return (idleTimer = setTimeout(watch, left));
    s.idle = true;
    debug('idle', { idleFor });
    emit('idle', { idleFor });
  }

  // Activity at `t`, in this tab or another one: an idle user is back.
  function present(t) {
    const idleFor = t - s.lastActivityAt;
    s.lastActivityAt = t;
    if (!s.idle) return;
    s.idle = false;
    debug('active', { idleFor });
    emit('active', { idleFor });
    watch();
  }

  function activity() {
    if (!live() || s.expiring || doc && doc.hidden) return;
    const t = now();
    if (t - s.lastActivityAt < throttle) return;
    present(t);
    // One message per ping is enough for the leader to know somebody is here; other tabs hear it
    // at least twice per idle period, so that none of them calls the user idle while they work.
    if (!told || t - toldAt >= idleAfter() / 2) { told = true; toldAt = t; send({ t: 'a', at: t }); }
    if (s.expiresAt && s.expiresAt - t < s.tick + s.timeout) cycle();
  }

  function wake(e) {
    if (!live() || doc && doc.hidden || e.type == 'focus' && e.target != root) return;
    // Expiry first: a session that ran out while the tab slept must not be pinged back to life.
    countdown();
    if (!live()) return;
    if (e.type == 'visibilitychange' || e.type == 'focus') activity();
    if (now() - s.lastOkAt > s.tick) cycle();
  }

  // `all`: also what a paused tab keeps, to hear other tabs and to hand over the lease on closing.
  function listen(add, all) {
    const m = add ? 'addEventListener' : 'removeEventListener', opt = { capture: true, passive: true };
    if (target) (o.activityEvents || ACTIVITY).forEach((t) => target[m](t, activity, opt));
    if (root[m]) {
      WAKE.forEach((t) => root[m](t, wake, opt));
      if (all) {
        root[m]('storage', onStorage);
        root[m]('pagehide', unlease);
      }
    }
    if (doc) {
      doc[m]('visibilitychange', wake, opt);
      doc[m]('resume', wake, opt);
    }
  }

  // Asks for the Web Lock that makes this tab the one pinging for all (granted when no other tab
  // holds it). Without Web Locks, lead() claims the lease at each tick.
  function claim() {
    if (!nav.locks) return;
    lockAbort = new AbortController();
    nav.locks.request(name, { signal: lockAbort.signal }, () => new Promise((r) => {
      release = r;
      s.leader = true;
      debug('leader');
    })).catch(noop);
  }

  // Stops this tab's timers, request, retry wait and leadership: for stop(), expiry and pause().
  function quiet() {
    clearTimeout(tickTimer); clearTimeout(countdownTimer); clearTimeout(idleTimer); clearTimeout(sleepTimer);
    if (wakeSleeper) wakeSleeper();
    if (inflight) inflight.abort();
    if (lockAbort) lockAbort.abort();
    if (release) release();
    release = lockAbort = null;
    if (root) unlease();
  }

  // A closing tab hands the lease over at once instead of letting it run out.
  function unlease() {
    if (!nav.locks) try {
      const key = name + ':lease';
      if ((JSON.parse(localStorage.getItem(key)) || {}).id == id) localStorage.removeItem(key);
    } catch (e) { /* no storage */ }
    s.leader = !!release;
  }

  function halt() {
    s.running = s.paused = s.expiring = false;
    quiet();
    if (channel) channel.close();
    channel = null;
    if (root) listen(false, true);
  }

  function expire(reason, remote) {
    if (s.expired || !s.running) return;
    s.expired = true;
    debug('expired', { reason });
    if (!remote) send({ t: 'x', reason });
    halt();
    emit('expired', { reason });
  }

  const api = {
    /**
     * Starts keeping the session alive. Pings at once, unless given the sign-in answer
     * (`POST /api/v1/session`), which already carries the session and the server's settings.
     * @param {object} [signIn] the JSON body the server answered to the sign-in
     */
    start(signIn) {
      if (s.running) return;
      setup();
      const first = signIn && answer(signIn, now());
      s.running = true;
      s.expired = s.expiring = s.idle = false;
      s.lastActivityAt = now();
      debug('start', { signIn: !!first });
      listen(true, true);
      if (root.BroadcastChannel) {
        channel = new BroadcastChannel(name);
        channel.onmessage = (e) => receive(e.data);
      }
      claim();
      schedule(s.tick);
      watch();
      if (first) report(first);
      else cycle(true);
    },

    /** Stops pinging and listening, in this tab only; the session is left to the server. */
    stop() {
      if (s.running) debug('stop');
      halt();
    },

    /**
     * Stops pinging and listening for activity in this tab until `resume()`; the session is left
     * to the server, and another tab takes over the pinging. Logouts and expiries in other tabs
     * are still heard.
     */
    pause() {
      if (!live()) return;
      debug('pause');
      s.paused = true;
      s.expiring = false;
      quiet();
      listen(false);
    },

    /** Undoes `pause()`: ends the session here if it ran out meanwhile, else pings if stale. */
    resume() {
      if (!s.running || !s.paused) return;
      debug('resume');
      s.paused = false;
      listen(true);
      claim();
      schedule(s.tick);
      watch();
      countdown();
      if (live() && now() - s.lastOkAt > s.tick) cycle();
    },

    /**
     * Keeps the session: pings now, whether or not the user was active (the "Stay signed in" button).
     * @returns {Promise<boolean>} whether the session was extended
     */
    extend() {
      if (!live()) return Promise.resolve(false);
      debug('extend');
      present(now());
      return cycle(true).then((ok) => ok && live());
    },

    /**
     * Ends the session on the server and in every tab (each one emits `expired` with reason `logout`).
     * @returns {Promise<void>}
     */
    logout() {
      setup();
      expire('logout');
      return request(sessionUrl, 'DELETE').then(noop, noop);
    },

    /**
     * Subscribes to an event: `health`, `disconnected`, `reconnected`, `expiring`, `expired`, `ping`,
     * `idle` or `active`.
     * @param {string} type event name
     * @param {Function} handler called with the event's data
     * @returns {Function} a function that unsubscribes
     */
    on(type, handler) {
      (handlers[type] = handlers[type] || []).push(handler);
      return () => api.off(type, handler);
    },

    /**
     * Unsubscribes a handler given to `on`.
     * @param {string} type event name
     * @param {Function} handler the same function
     */
    off(type, handler) {
      const list = handlers[type] || [], i = list.indexOf(handler);
      if (i >= 0) list.splice(i, 1);
    },

    /** A snapshot of the current state; times are page-clock milliseconds (Date.now()). */
    get state() {
      return Object.assign({}, s, { expiresIn: s.expiresAt ? Math.max(0, s.expiresAt - now()) : null });
    }
  };
  return api;
}

export default createKeepalive;
