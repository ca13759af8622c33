/**
 * keepalive.js: keeps a server session alive while its user is active, and tells the page how the
 * server is doing. One dependency-free file, served by the keepalive server at `/keepalive.js`.
 *
 * Loading it as a classic script defines the global `createKeepalive`; importing it as an ES module
 * (`import '/keepalive.js'`) does the same, and CommonJS or a bundler gets the factory from
 * `module.exports` (also as `.createKeepalive` and `.default`).
 *
 * The server is the source of truth: tick, timeout and retry count come from its keepalive answer,
 * and the session's remaining time is taken from `expiresAt - serverTime`, measured from the moment
 * the answer arrived, so a page clock that is wrong (or faked in tests) does not matter.
 *
 * Several tabs of one site share one client's work: the tab holding a Web Lock (or, without Web
 * Locks, a lease in localStorage) pings; results, activity, logout and expiry travel between tabs on
 * a BroadcastChannel (or storage events).
 */
(function (root, factory) {
  var createKeepalive = factory(root);
  createKeepalive.createKeepalive = createKeepalive.default = createKeepalive;
  if (typeof module == 'object' && module.exports) module.exports = createKeepalive;
  else root.createKeepalive = createKeepalive;
})(typeof self != 'undefined' ? self : this, function (root) {
  'use strict';

  // Events that show a person is at the page; throttled to one record per second.
  var ACTIVITY = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'focus'];
  // Moments a throttled or frozen tab comes back; a stale tab pings at once.
  var WAKE = ['pageshow', 'online'];
  var now = Date.now;
  function noop() {}

  /**
   * Creates a keepalive client. Nothing happens until `start()`.
   * @param {object} [options] see keepalive.d.ts for every option and its default
   * @returns {object} the client: `start`, `stop`, `extend`, `logout`, `on`, `off`, `state`
   */
  return function createKeepalive(options) {
    options = options || {};
    var doc = root.document;
    var nav = root.navigator || {};
    var base = root.location ? root.location.href : 'http://localhost/';
    var pingUrl = new URL(options.url || '/api/v1/keepalive/', base);
    // Extra parameters go through URLSearchParams: the old client glued them on with '&' and got 404s.
    var params = new URLSearchParams(options.params || {});
    params.forEach(function (v, k) { pingUrl.searchParams.set(k, v); });
    var probeUrl = options.probeUrl === null ? null : new URL(options.probeUrl || '/livez', base);
    var sessionUrl = new URL(options.sessionUrl || '/api/v1/session', base);
    var warnBefore = options.warnBefore == null ? 60000 : options.warnBefore;
    var retryBase = options.retryBase || 1000;
    var name = 'keepalive:' + pingUrl.pathname;
    var id = Math.random().toString(36).slice(2);
    var handlers = {};

    var s = {
      running: false, leader: false, connected: true, expiring: false, expired: false,
      health: 'unknown', checks: null,
      tick: options.tick || 30000, timeout: options.timeout || 8000,
      maxRetries: options.maxRetries == null ? 3 : options.maxRetries, healthCheckFrequency: 0,
      lastPingAt: 0, lastOkAt: 0, lastAttemptAt: 0, nextPingAt: 0, disconnectedAt: 0,
      lastActivityAt: now(), expiresAt: 0, absoluteExpiresAt: 0, idleTimeout: 0, error: null
    };
    var tickTimer, countdownTimer, sleepTimer, inflight, busy, channel, lockAbort, release, told;

    function emit(type, data) {
      // A copy, so a handler that unsubscribes (or subscribes) does not disturb this dispatch.
      (handlers[type] || []).slice().forEach(function (h) {
        try { h(data); } catch (e) { setTimeout(function () { throw e; }); }
      });
    }

    function send(msg) {
      if (root.BroadcastChannel) return channel && channel.postMessage(msg);
      try { localStorage.setItem(name, JSON.stringify([msg, Math.random()])); } catch (e) { /* no storage: one tab */ }
    }

    function receive(msg) {
      if (!msg || !s.running) return;
      if (msg.t == 'p') merge(msg.p);
      if (msg.t == 'a' && msg.at > s.lastActivityAt && !s.expiring) s.lastActivityAt = msg.at;
      if (msg.t == 'x') expire(msg.reason, true);
    }

    function onStorage(e) {
      if (e.key == name && e.newValue) try { receive(JSON.parse(e.newValue)[0]); } catch (x) { /* not ours */ }
    }

    // With Web Locks the lock decides; otherwise a lease in localStorage that the leader renews each tick.
    function lead() {
      if (nav.locks) return s.leader;
      try {
        var key = name + ':lease', lease = JSON.parse(localStorage.getItem(key) || '{}');
        if (lease.id != id && lease.until > now()) return (s.leader = false);
        // Renewed every tick; a leader whose timers the browser throttles loses it to a livelier tab.
        localStorage.setItem(key, JSON.stringify({ id: id, until: now() + s.tick + s.timeout }));
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
      var since = now() - s.lastAttemptAt, leader = lead();
      // Someone tried lately (extend, wake-up): skip. A follower steps in when the leader has been
      // silent for two ticks (a frozen or throttled tab).
      if (since < s.tick / 2 || !leader && since < 2 * s.tick + s.timeout) return;
      cycle();
    }

    function sleep(ms) {
      return new Promise(function (r) { sleepTimer = setTimeout(r, ms); });
    }

    // One ping: a keepalive when the user was active since the last one, else a probe that keeps
    // watch on the server without extending the session.
    async function attempt(keep, n) {
      var ac = inflight = new AbortController();
      var timer = setTimeout(function () { ac.abort(); }, s.timeout);
      var at = s.lastAttemptAt = now(), data;
      try {
        var res = await fetch(keep ? pingUrl : probeUrl, {
          cache: 'no-store', credentials: 'same-origin', signal: ac.signal,
          headers: { accept: 'application/json' }
        });
        if (keep && res.status == 401) {
          data = await res.json().catch(noop);
          merge({ health: data && data.serverHealth, connected: true, lastOkAt: now() });
          expire('server');
          return true;
        }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        var p = answer(keep && await res.json(), at, n);
      } catch (e) {
        if (s.running) report({ ok: false, keep: keep, at: at, attempt: n, error: String(e.message || e) });
        throw e;
      } finally {
        clearTimeout(timer);
      }
      if (s.running) report(p);
      return true;
    }

    // Turns a server answer (keepalive or sign-in) into a patch of shared state, in page-clock time.
    function answer(data, at, n) {
      var t = now(), p = { ok: true, keep: !!data, at: at, attempt: n || 0, connected: true, lastOkAt: t };
      if (data) {
        var off = t - Date.parse(data.serverTime), ses = data.session || {}, ka = data.keepalive || {};
        p.lastPingAt = t;
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
      send({ t: 'p', p: p });
    }

    // Applies a patch from this tab or another one, and emits what changed.
    function merge(p) {
      var tick = s.tick, h = p.health;
      ['lastPingAt', 'lastOkAt', 'expiresAt', 'absoluteExpiresAt', 'idleTimeout', 'tick', 'timeout',
        'maxRetries', 'healthCheckFrequency', 'error'].forEach(function (k) { if (p[k] != null) s[k] = p[k]; });
      if (p.at > s.lastAttemptAt) s.lastAttemptAt = p.at;
      if (p.lastPingAt) told = false;
      if (h && h.status && h.status != s.health) {
        var previous = s.health;
        s.health = h.status; s.checks = h.checks;
        emit('health', { status: h.status, checks: h.checks, previous: previous });
      } else if (h) s.checks = h.checks;
      if (p.connected === false && s.connected) {
        s.connected = false; s.disconnectedAt = now();
        emit('disconnected', { error: p.error, lastOkAt: s.lastOkAt });
      }
      if (p.connected && !s.connected) {
        s.connected = true; s.error = null;
        emit('reconnected', { downtime: now() - s.disconnectedAt });
      }
      if (p.at) emit('ping', p);
      if (s.tick != tick && s.running) schedule(s.tick);
      if (p.expiresAt) countdown();
    }

    // Gives up after maxRetries, or when the next try could not end before the next tick: that keeps
    // a lost server reported within two ticks (60 s with the usual 30 s tick).
    async function run(force) {
      var start = now();
      for (var n = 0; ; n++) {
        var keep = force || s.lastActivityAt > s.lastPingAt;
        if (!keep && !probeUrl) return false;
        try {
          return await attempt(keep, n);
        } catch (e) {
          var delay = Math.random() * Math.min(s.tick / 2, retryBase * Math.pow(2, n));
          if (!s.running) return false;
          if (!s.connected || n >= s.maxRetries || now() + delay + s.timeout > start + s.tick) {
            report({ connected: false, error: String(e.message || e) });
            return false;
          }
          await sleep(delay);
          if (!s.running) return false;
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
      if (!s.running || !s.expiresAt) return;
      var left = s.expiresAt - now(), warn = Math.min(warnBefore, s.idleTimeout / 2 || warnBefore);
      if (left <= 0) return expire('idle');
      s.expiring = left <= warn;
      if (s.expiring) {
        emit('expiring', { secondsLeft: Math.ceil(left / 1000), final: s.expiresAt >= s.absoluteExpiresAt });
        countdownTimer = setTimeout(countdown, left % 1000 || 1000);
      } else countdownTimer = setTimeout(countdown, Math.min(left - warn, 864e5));
    }

    function activity(e) {
      if (!s.running || s.expiring || doc && doc.hidden) return;
      var t = now();
      if (t - s.lastActivityAt < 1000) return;
      s.lastActivityAt = t;
      // One message per ping is enough for the leader to know somebody is here.
      if (!told) { told = true; send({ t: 'a', at: t }); }
      if (s.expiresAt && s.expiresAt - t < s.tick + s.timeout) cycle();
    }

    function wake(e) {
      if (!s.running || doc && doc.hidden) return;
      // Expiry first: a session that ran out while the tab slept must not be pinged back to life.
      countdown();
      if (!s.running) return;
      if (e.type == 'visibilitychange') activity(e);
      if (now() - s.lastOkAt > s.tick) cycle();
    }

    function listen(add) {
      var m = add ? 'addEventListener' : 'removeEventListener', opt = { capture: true, passive: true };
      if (root[m]) {
        ACTIVITY.forEach(function (t) { root[m](t, activity, opt); });
        WAKE.forEach(function (t) { root[m](t, wake, opt); });
        root[m]('storage', onStorage);
        root[m]('pagehide', unlease);
      }
      if (doc) {
        doc[m]('visibilitychange', wake, opt);
        doc[m]('resume', wake, opt);
      }
    }

    // A closing tab hands the lease over at once instead of letting it run out.
    function unlease() {
      if (!nav.locks) try {
        var key = name + ':lease';
        if ((JSON.parse(localStorage.getItem(key)) || {}).id == id) localStorage.removeItem(key);
      } catch (e) { /* no storage */ }
      s.leader = !!release;
    }

    function halt() {
      s.running = s.expiring = false;
      clearTimeout(tickTimer); clearTimeout(countdownTimer); clearTimeout(sleepTimer);
      if (inflight) inflight.abort();
      if (lockAbort) lockAbort.abort();
      if (release) release();
      if (channel) channel.close();
      channel = release = lockAbort = null;
      unlease();
      listen(false);
    }

    function expire(reason, remote) {
      if (s.expired || !s.running) return;
      s.expired = true;
      if (!remote) send({ t: 'x', reason: reason });
      halt();
      emit('expired', { reason: reason });
    }

    var api = {
      /**
       * Starts keeping the session alive. Pings at once, unless given the sign-in answer
       * (`POST /api/v1/session`), which already carries the session and the server's settings.
       * @param {object} [signIn] the JSON body the server answered to the sign-in
       */
      start: function (signIn) {
        if (s.running) return;
        var first = signIn && answer(signIn, now());
        s.running = true;
        s.expired = s.expiring = false;
        s.lastActivityAt = now();
        listen(true);
        if (root.BroadcastChannel) {
          channel = new BroadcastChannel(name);
          channel.onmessage = function (e) { receive(e.data); };
        }
        if (nav.locks) {
          lockAbort = new AbortController();
          nav.locks.request(name, { signal: lockAbort.signal }, function () {
            return new Promise(function (r) { release = r; s.leader = true; });
          }).catch(noop);
        }
        schedule(s.tick);
        if (first) report(first);
        else cycle(true);
      },

      /** Stops pinging and listening, in this tab only; the session is left to the server. */
      stop: halt,

      /**
       * Keeps the session: pings now, whether or not the user was active (the "Stay signed in" button).
       * @returns {Promise<boolean>} whether the session was extended
       */
      extend: function () {
        if (!s.running) return Promise.resolve(false);
        s.lastActivityAt = now();
        return cycle(true).then(function (ok) { return ok && s.running; });
      },

      /**
       * Ends the session on the server and in every tab (each one emits `expired` with reason `logout`).
       * @returns {Promise<void>}
       */
      logout: function () {
        expire('logout');
        return fetch(sessionUrl, { method: 'DELETE', credentials: 'same-origin', cache: 'no-store' })
          .then(noop, noop);
      },

      /**
       * Subscribes to an event: `health`, `disconnected`, `reconnected`, `expiring`, `expired` or `ping`.
       * @param {string} type event name
       * @param {Function} handler called with the event's data
       * @returns {Function} a function that unsubscribes
       */
      on: function (type, handler) {
        (handlers[type] = handlers[type] || []).push(handler);
        return function () { api.off(type, handler); };
      },

      /**
       * Unsubscribes a handler given to `on`.
       * @param {string} type event name
       * @param {Function} handler the same function
       */
      off: function (type, handler) {
        var list = handlers[type] || [], i = list.indexOf(handler);
        if (i >= 0) list.splice(i, 1);
      },

      /** A snapshot of the current state; times are page-clock milliseconds (Date.now()). */
      get state() {
        var copy = Object.assign({}, s);
        copy.expiresIn = s.expiresAt ? Math.max(0, s.expiresAt - now()) : null;
        return copy;
      }
    };
    return api;
  };
});
