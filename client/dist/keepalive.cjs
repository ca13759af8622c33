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
var WAKE = ["pageshow", "online"];
var now = () => Date.now();
var noop = () => {
};
function createKeepalive(options = {}) {
  const o = options;
  const warnBefore = o.warnBefore == null ? 6e4 : o.warnBefore;
  const retryBase = o.retryBase || 1e3;
  const id = Math.random().toString(36).slice(2);
  const handlers = {};
  const s = {
    running: false,
    leader: false,
    connected: true,
    expiring: false,
    expired: false,
    health: "unknown",
    checks: null,
    tick: o.tick || 3e4,
    timeout: o.timeout || 8e3,
    maxRetries: o.maxRetries == null ? 3 : o.maxRetries,
    healthCheckFrequency: 0,
    lastPingAt: 0,
    lastOkAt: 0,
    lastAttemptAt: 0,
    nextPingAt: 0,
    disconnectedAt: 0,
    lastActivityAt: now(),
    expiresAt: 0,
    absoluteExpiresAt: 0,
    idleTimeout: 0,
    error: null
  };
  let root, doc, nav, pingUrl, probeUrl, sessionUrl, name;
  let tickTimer, countdownTimer, sleepTimer, wakeSleeper, inflight, busy, channel, lockAbort, release, told;
  function setup() {
    if (root) return;
    root = globalThis;
    doc = root.document;
    nav = root.navigator || {};
    const base = root.location ? root.location.href : "http://localhost/";
    pingUrl = new URL(o.url || "/api/v1/keepalive/", base);
    new URLSearchParams(o.params || {}).forEach((v, k) => pingUrl.searchParams.set(k, v));
    probeUrl = o.probeUrl === null ? null : new URL(o.probeUrl || "/livez", base);
    sessionUrl = new URL(o.sessionUrl || "/api/v1/session", base);
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
    if (msg.t == "a" && msg.at > s.lastActivityAt && !s.expiring) s.lastActivityAt = msg.at;
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
    if (since < s.tick / 2 || !leader && since < 2 * s.tick + s.timeout) return;
    cycle();
  }
  function sleep(ms) {
    return new Promise((r) => {
      wakeSleeper = r;
      sleepTimer = setTimeout(r, ms);
    });
  }
  function request(url, method, signal) {
    return fetch(url, { method, signal, cache: "no-store", credentials: "same-origin", headers: { accept: "application/json" } });
  }
  async function attempt(keep, n) {
    const ac = inflight = new AbortController();
    const timer = setTimeout(() => ac.abort(), s.timeout);
    const at = s.lastAttemptAt = now();
    let p;
    try {
      const res = await request(keep ? pingUrl : probeUrl, "GET", ac.signal);
      if (keep && res.status == 401) {
        const data = await res.json().catch(noop);
        merge({ health: data && data.serverHealth, connected: true, lastOkAt: now() });
        expire("server");
        return true;
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      p = answer(keep && await res.json(), at, n);
    } catch (e) {
      if (s.running) report({ ok: false, keep, at, attempt: n, error: String(e.message || e) });
      throw e;
    } finally {
      clearTimeout(timer);
    }
    if (s.running) report(p);
    return true;
  }
  function answer(data, at, n) {
    const t = now(), p = { ok: true, keep: !!data, at, attempt: n || 0, connected: true, lastOkAt: t };
    if (data) {
      const off = t - Date.parse(data.serverTime), ses = data.session || {}, ka = data.keepalive || {};
      p.lastPingAt = t;
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
      emit("health", { status: h.status, checks: h.checks, previous });
    } else if (h) s.checks = h.checks;
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
    if (s.tick != tick && s.running) schedule(s.tick);
    if (p.expiresAt) countdown();
  }
  async function run(force) {
    const start = now();
    for (let n = 0; ; n++) {
      const keep = force || s.lastActivityAt > s.lastPingAt;
      if (!keep && !probeUrl) return false;
      try {
        return await attempt(keep, n);
      } catch (e) {
        const delay = Math.random() * Math.min(s.tick / 2, retryBase * 2 ** n);
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
    try {
      return await busy;
    } finally {
      busy = null;
    }
  }
  function countdown() {
    clearTimeout(countdownTimer);
    if (!s.running || !s.expiresAt) return;
    const left = s.expiresAt - now(), warn = Math.min(warnBefore, s.idleTimeout / 2 || warnBefore);
    if (left <= 0) return expire("idle");
    s.expiring = left <= warn;
    if (s.expiring) {
      emit("expiring", { secondsLeft: Math.ceil(left / 1e3), final: s.expiresAt >= s.absoluteExpiresAt });
      countdownTimer = setTimeout(countdown, left % 1e3 || 1e3);
    } else countdownTimer = setTimeout(countdown, Math.min(left - warn, 864e5));
  }
  function activity() {
    if (!s.running || s.expiring || doc && doc.hidden) return;
    const t = now();
    if (t - s.lastActivityAt < 1e3) return;
    s.lastActivityAt = t;
    if (!told) {
      told = true;
      send({ t: "a", at: t });
    }
    if (s.expiresAt && s.expiresAt - t < s.tick + s.timeout) cycle();
  }
  function wake(e) {
    if (!s.running || doc && doc.hidden) return;
    countdown();
    if (!s.running) return;
    if (e.type == "visibilitychange") activity();
    if (now() - s.lastOkAt > s.tick) cycle();
  }
  function listen(add) {
    const m = add ? "addEventListener" : "removeEventListener", opt = { capture: true, passive: true };
    if (root[m]) {
      ACTIVITY.forEach((t) => root[m](t, activity, opt));
      WAKE.forEach((t) => root[m](t, wake, opt));
      root[m]("storage", onStorage);
      root[m]("pagehide", unlease);
    }
    if (doc) {
      doc[m]("visibilitychange", wake, opt);
      doc[m]("resume", wake, opt);
    }
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
    s.running = s.expiring = false;
    clearTimeout(tickTimer);
    clearTimeout(countdownTimer);
    clearTimeout(sleepTimer);
    if (wakeSleeper) wakeSleeper();
    if (inflight) inflight.abort();
    if (lockAbort) lockAbort.abort();
    if (release) release();
    if (channel) channel.close();
    channel = release = lockAbort = null;
    if (root) {
      unlease();
      listen(false);
    }
  }
  function expire(reason, remote) {
    if (s.expired || !s.running) return;
    s.expired = true;
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
      s.expired = s.expiring = false;
      s.lastActivityAt = now();
      listen(true);
      if (root.BroadcastChannel) {
        channel = new BroadcastChannel(name);
        channel.onmessage = (e) => receive(e.data);
      }
      if (nav.locks) {
        lockAbort = new AbortController();
        nav.locks.request(name, { signal: lockAbort.signal }, () => new Promise((r) => {
          release = r;
          s.leader = true;
        })).catch(noop);
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
    extend() {
      if (!s.running) return Promise.resolve(false);
      s.lastActivityAt = now();
      return cycle(true).then((ok) => ok && s.running);
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
     * Subscribes to an event: `health`, `disconnected`, `reconnected`, `expiring`, `expired` or `ping`.
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
