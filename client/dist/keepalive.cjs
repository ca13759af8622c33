/*! keepalive-client 0.1.0 (MIT OR Apache-2.0) */
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);

// src/keepalive.js
var keepalive_exports = {};
__export(keepalive_exports, {
  createKeepalive: () => createKeepalive,
  default: () => keepalive_default
});
module.exports = __toCommonJS(keepalive_exports);
var ACTIVITY = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"];
var WAKE = ["pageshow", "online", "focus"];
var HEALTH = { pass: "healthy", warn: "degraded", fail: "critical" };
var now = () => Date.now();
var noop = () => {
};
function createKeepalive(options = {}) {
  const o = options;
  const or = (value, fallback) => value == null ? fallback : value;
  const warnBefore = or(o.warnBefore, 6e4);
  const retryBase = o.retryBase || 1e3;
  const throttle = or(o.activityThrottle, 1e3);
  const debug = o.debug === true ? (message, details) => console.debug("keepalive: " + message, details || "") : o.debug || noop;
  const id = Math.random().toString(36).slice(2);
  const handlers = {};
  const s = {
    running: false,
    paused: false,
    idle: false,
    leader: false,
    connected: true,
    expiring: false,
    expired: false,
    health: "unknown",
    checks: null,
    tick: o.tick || 3e4,
    timeout: o.timeout || 8e3,
    maxRetries: or(o.maxRetries, 3),
    healthCheckFrequency: 0,
    lastPingAt: 0,
    lastOkAt: 0,
    lastAttemptAt: 0,
    lastHealthAt: 0,
    nextPingAt: 0,
    disconnectedAt: 0,
    lastActivityAt: now(),
    expiresAt: 0,
    absoluteExpiresAt: 0,
    idleTimeout: 0,
    error: null
  };
  let root, doc, nav, target, pingUrl, probeUrl, healthUrl, sessionUrl, name;
  let tickTimer, countdownTimer, idleTimer, sleepTimer, wakeSleeper, inflight, busy, channel, lockAbort, release, told, toldAt;
  const live = () => s.running && !s.paused;
  const idleAfter = () => o.idleTimeout || s.tick;
  function setup() {
    if (root) return;
    root = globalThis;
    doc = root.document;
    nav = root.navigator || {};
    const base = root.location ? root.location.href : "http://localhost/";
    pingUrl = new URL(o.url || "/api/v1/keepalive/", base);
    new URLSearchParams(o.params || {}).forEach((v, k) => pingUrl.searchParams.set(k, v));
    probeUrl = o.probeUrl === null ? null : new URL(o.probeUrl || "/livez", base);
    healthUrl = o.healthUrl === null ? null : new URL(o.healthUrl || "/health", base);
    sessionUrl = new URL(o.sessionUrl || "/api/v1/session", base);
    target = o.activityTarget || doc;
    name = "keepalive:" + pingUrl.pathname;
  }
  function emit(type, data) {
    (handlers[type] || []).slice().forEach((h) => {
      try {
        h(data);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    });
  }
  function send(msg) {
    if (root.BroadcastChannel) return channel && channel.postMessage(msg);
    try {
      localStorage.setItem(name, JSON.stringify([msg, Math.random()]));
    } catch (e) {
    }
  }
  function receive(msg) {
    if (!msg || !s.running) return;
    if (msg.t == "p") merge(msg.p);
    if (msg.t == "a" && msg.at > s.lastActivityAt && !s.expiring) present(msg.at);
    if (msg.t == "x") expire(msg.reason, true);
  }
  function onStorage(e) {
    if (e.key == name && e.newValue) try {
      receive(JSON.parse(e.newValue)[0]);
    } catch (x) {
    }
  }
  function lead() {
    if (nav.locks) return s.leader;
    try {
      const key = name + ":lease", lease = JSON.parse(localStorage.getItem(key) || "{}");
      if (lease.id != id && lease.until > now()) return s.leader = false;
      localStorage.setItem(key, JSON.stringify({ id, until: now() + s.tick + s.timeout }));
    } catch (e) {
    }
    return s.leader = true;
  }
  function schedule(delay) {
    clearTimeout(tickTimer);
    tickTimer = setTimeout(onTick, delay);
    s.nextPingAt = now() + delay;
  }
  function onTick() {
    schedule(s.tick);
    const since = now() - s.lastAttemptAt, leader = lead();
    if (since < s.tick / 2 || !leader && since < 2 * s.tick + s.timeout) return debug("tick: skipped", { leader, since });
    cycle();
  }
  function sleep(ms) {
    return new Promise((r) => {
      wakeSleeper = r;
      sleepTimer = setTimeout(r, ms);
    });
  }
  async function request(url, method, signal) {
    const h = o.headers;
    const headers = Object.assign({ accept: "application/json" }, await (typeof h == "function" ? h({ url: url.href, method }) : h));
    return (o.fetch || fetch)(url.href, { method, signal, headers, cache: "no-store", credentials: o.credentials || "same-origin" });
  }
  async function attempt(kind, n) {
    const ac = inflight = new AbortController();
    const timer = setTimeout(() => ac.abort(), s.timeout);
    const at = s.lastAttemptAt = now(), keep = kind == 1;
    let p;
    try {
      const res = await request(keep ? pingUrl : kind ? healthUrl : probeUrl, "GET", ac.signal);
      if (keep && res.status == 401) {
        const data = await res.json().catch(noop);
        merge({ health: data && data.serverHealth, connected: true, lastOkAt: now(), lastHealthAt: now() });
        expire("server");
        return true;
      }
      if (!res.ok && !(kind == 2 && res.status == 503)) throw new Error("HTTP " + res.status);
      p = answer(keep && await res.json(), at, n);
      if (kind == 2) {
        const status = HEALTH[(await res.json()).status];
        if (!status) throw new Error("unexpected answer");
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
  function answer(data, at, n) {
    const t = now(), p = { ok: true, keep: !!data, at, attempt: n || 0, connected: true, lastOkAt: t };
    if (data) {
      const off = t - Date.parse(data.serverTime), ses = data.session || {}, ka = data.keepalive || {};
      p.lastPingAt = p.lastHealthAt = t;
      p.expiresAt = Date.parse(ses.expiresAt) + off;
      p.absoluteExpiresAt = Date.parse(ses.absoluteExpiresAt) + off;
      p.idleTimeout = ses.idleTimeoutMs;
      p.tick = ka.tickMs;
      p.timeout = ka.timeoutMs;
      p.maxRetries = ka.maxRetries;
      p.healthCheckFrequency = ka.healthCheckFrequency;
      p.health = data.serverHealth;
      if (!(p.expiresAt > 0)) throw new Error("unexpected answer");
    }
    return p;
  }
  function report(p) {
    merge(p);
    send({ t: "p", p });
  }
  function merge(p) {
    const tick = s.tick, h = p.health;
    [
      "lastPingAt",
      "lastOkAt",
      "lastHealthAt",
      "expiresAt",
      "absoluteExpiresAt",
      "idleTimeout",
      "tick",
      "timeout",
      "maxRetries",
      "healthCheckFrequency",
      "error"
    ].forEach((k) => {
      if (p[k] != null) s[k] = p[k];
    });
    if (p.at > s.lastAttemptAt) s.lastAttemptAt = p.at;
    if (p.lastPingAt) told = false;
    if (h && h.status && h.status != s.health) {
      const previous = s.health;
      s.health = h.status;
      s.checks = h.checks;
      debug("health: " + h.status, h);
      emit("health", { status: h.status, checks: h.checks, previous });
    } else if (h && h.checks) s.checks = h.checks;
    if (p.connected === false && s.connected) {
      s.connected = false;
      s.disconnectedAt = now();
      emit("disconnected", { error: p.error, lastOkAt: s.lastOkAt });
    }
    if (p.connected && !s.connected) {
      s.connected = true;
      s.error = null;
      emit("reconnected", { downtime: now() - s.disconnectedAt });
    }
    if (p.at) emit("ping", p);
    if (s.tick != tick && live()) schedule(s.tick);
    if (p.expiresAt) countdown();
  }
  async function run(force) {
    const start = now();
    for (let n = 0; ; n++) {
      const kind = force || s.lastActivityAt > s.lastPingAt && !s.idle ? 1 : healthUrl && s.healthCheckFrequency && now() - s.lastHealthAt > (s.healthCheckFrequency - 0.5) * s.tick ? 2 : probeUrl ? 0 : -1;
      debug(["idle: nothing to send", "probe", "keepalive", "health check"][kind + 1], { attempt: n, lastActivityAt: s.lastActivityAt });
      if (kind < 0) return false;
      try {
        return await attempt(kind, n);
      } catch (e) {
        const delay = Math.random() * Math.min(s.tick / 2, retryBase * 2 ** n), error = String(e.message || e);
        if (!live()) return false;
        if (!s.connected || n >= s.maxRetries || now() + delay + s.timeout > start + s.tick) {
          debug("disconnected", { error });
          report({ connected: false, error });
          return false;
        }
        debug("retry", { delay, error });
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
    try {
      return await busy;
    } finally {
      busy = null;
    }
  }
  function countdown() {
    clearTimeout(countdownTimer);
    if (!live() || !s.expiresAt) return;
    const left = s.expiresAt - now(), warn = Math.min(warnBefore, s.idleTimeout / 2 || warnBefore);
    if (left <= 0) return expire("idle");
    s.expiring = left <= warn;
    if (s.expiring) {
      emit("expiring", { secondsLeft: Math.ceil(left / 1e3), final: s.expiresAt >= s.absoluteExpiresAt });
      countdownTimer = setTimeout(countdown, left % 1e3 || 1e3);
    } else countdownTimer = setTimeout(countdown, Math.min(left - warn, 864e5));
  }
  function watch() {
    clearTimeout(idleTimer);
    if (!live() || s.idle) return;
    const idleFor = now() - s.lastActivityAt, left = idleAfter() - idleFor;
    if (left > 0) return idleTimer = setTimeout(watch, left);
    s.idle = true;
    debug("idle", { idleFor });
    emit("idle", { idleFor });
  }
  function present(t) {
    const idleFor = t - s.lastActivityAt;
    s.lastActivityAt = t;
    if (!s.idle) return;
    s.idle = false;
    debug("active", { idleFor });
    emit("active", { idleFor });
    watch();
  }
  function activity() {
    if (!live() || s.expiring || doc && doc.hidden) return;
    const t = now();
    if (t - s.lastActivityAt < throttle) return;
    present(t);
    if (!told || t - toldAt >= idleAfter() / 2) {
      told = true;
      toldAt = t;
      send({ t: "a", at: t });
    }
    if (s.expiresAt && s.expiresAt - t < s.tick + s.timeout) cycle();
  }
  function wake(e) {
    if (!live() || doc && doc.hidden || e.type == "focus" && e.target != root) return;
    countdown();
    if (!live()) return;
    if (e.type == "visibilitychange" || e.type == "focus") activity();
    if (now() - s.lastOkAt > s.tick) cycle();
  }
  function listen(add, all) {
    const m = add ? "addEventListener" : "removeEventListener", opt = { capture: true, passive: true };
    if (target) (o.activityEvents || ACTIVITY).forEach((t) => target[m](t, activity, opt));
    if (root[m]) {
      WAKE.forEach((t) => root[m](t, wake, opt));
      if (all) {
        root[m]("storage", onStorage);
        root[m]("pagehide", unlease);
      }
    }
    if (doc) {
      doc[m]("visibilitychange", wake, opt);
      doc[m]("resume", wake, opt);
    }
  }
  function claim() {
    if (!nav.locks) return;
    lockAbort = new AbortController();
    nav.locks.request(name, { signal: lockAbort.signal }, () => new Promise((r) => {
      release = r;
      s.leader = true;
      debug("leader");
    })).catch(noop);
  }
  function quiet() {
    clearTimeout(tickTimer);
    clearTimeout(countdownTimer);
    clearTimeout(idleTimer);
    clearTimeout(sleepTimer);
    if (wakeSleeper) wakeSleeper();
    if (inflight) inflight.abort();
    if (lockAbort) lockAbort.abort();
    if (release) release();
    release = lockAbort = null;
    if (root) unlease();
  }
  function unlease() {
    if (!nav.locks) try {
      const key = name + ":lease";
      if ((JSON.parse(localStorage.getItem(key)) || {}).id == id) localStorage.removeItem(key);
    } catch (e) {
    }
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
    debug("expired", { reason });
    if (!remote) send({ t: "x", reason });
    halt();
    emit("expired", { reason });
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
      debug("start", { signIn: !!first });
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
      if (s.running) debug("stop");
      halt();
    },
    /**
     * Stops pinging and listening for activity in this tab until `resume()`; the session is left
     * to the server, and another tab takes over the pinging. Logouts and expiries in other tabs
     * are still heard.
     */
    pause() {
      if (!live()) return;
      debug("pause");
      s.paused = true;
      s.expiring = false;
      quiet();
      listen(false);
    },
    /** Undoes `pause()`: ends the session here if it ran out meanwhile, else pings if stale. */
    resume() {
      if (!s.running || !s.paused) return;
      debug("resume");
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
      debug("extend");
      present(now());
      return cycle(true).then((ok) => ok && live());
    },
    /**
     * Ends the session on the server and in every tab (each one emits `expired` with reason `logout`).
     * @returns {Promise<void>}
     */
    logout() {
      setup();
      expire("logout");
      return request(sessionUrl, "DELETE").then(noop, noop);
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
var keepalive_default = createKeepalive;
// Annotate the CommonJS export names for ESM import in node:
0 && (module.exports = {
  createKeepalive
});
