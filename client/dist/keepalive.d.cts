// Type declarations of keepalive-client (also served by the keepalive server at /keepalive.d.ts).
//
//   import { createKeepalive } from 'keepalive-client';        // or the default export
//   const { createKeepalive } = require('keepalive-client');
//
// The classic-script build defines a global instead: its declaration is keepalive-client/global.

/** Health the server reports; `unknown` until its first answer. */
export type HealthStatus = 'healthy' | 'degraded' | 'critical' | 'unknown';

export interface HealthChecks {
  redis: 'ok' | 'offline' | 'disabled';
  memory: 'ok' | 'warning' | 'critical';
}

export interface KeepaliveOptions {
  /** Keepalive endpoint; may carry its own query string. Default `/api/v1/keepalive/`. */
  url?: string;
  /** Extra query parameters, added with URLSearchParams to those already in `url`. */
  params?: Record<string, string | number | boolean> | URLSearchParams;
  /** Checked when the user is idle, so a lost server is noticed without extending the session. Default `/livez`; `null` turns it off. */
  probeUrl?: string | null;
  /**
   * Looked at instead of `probeUrl` when the user is idle and the health the client knows is the
   * server's `healthCheckFrequency` ticks old (a keepalive answer carries it too). Default `/health`;
   * `null` turns it off.
   */
  healthUrl?: string | null;
  /** Session endpoint that `logout()` sends DELETE to. Default `/api/v1/session`. */
  sessionUrl?: string;
  /** Milliseconds before expiry at which `expiring` starts (at most half the idle timeout). Default 60000. */
  warnBefore?: number;
  /** Cap of the first retry delay in ms; it doubles with each retry (full jitter). Default 1000. */
  retryBase?: number;
  /** Tick in ms until the server's first answer says otherwise. Default 30000. */
  tick?: number;
  /** Ping timeout in ms until the server's first answer says otherwise. Default 8000. */
  timeout?: number;
  /** Retries of a failed ping until the server's first answer says otherwise. Default 3. */
  maxRetries?: number;
  /** The fetch credentials mode of every request: `include` for keepalive on another origin. Default `same-origin`. */
  credentials?: RequestCredentials;
  /**
   * Headers added to every request (keepalive, probe, health, logout): an object, or a function
   * called for each request, which may return a promise (a token that is refreshed).
   */
  headers?: Record<string, string> | ((request: { url: string; method: string }) => Record<string, string> | Promise<Record<string, string>>);
  /** The fetch to use; default the page's `fetch`, looked up at each request. */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /**
   * Milliseconds without activity after which the user is idle: `idle` is emitted and the session
   * is no longer extended (the server's idle timeout then runs out). Set it shorter than the
   * server's idle timeout. Default one tick.
   */
  idleTimeout?: number;
  /** DOM events that show the user is there. Default `pointerdown`, `pointermove`, `keydown`, `wheel`, `touchstart`, `focus`. */
  activityEvents?: string[];
  /** Where to listen for them (capture phase). Default `document`. */
  activityTarget?: EventTarget;
  /** Activity is recorded at most once per this many ms. Default 1000. */
  activityThrottle?: number;
  /** `true` logs each decision with console.debug; a function receives them instead. */
  debug?: boolean | ((message: string, details?: unknown) => void);
}

/** A snapshot of the client. Times are page-clock milliseconds since the epoch (Date.now()); 0 means never. */
export interface KeepaliveState {
  /** Between `start()` and `stop()`, logout or expiry. */
  running: boolean;
  /** Between `pause()` and `resume()`. */
  paused: boolean;
  /** No activity for `idleTimeout` (in any tab): the session is not extended. */
  idle: boolean;
  /** This tab is the one that pings for every tab of the site. */
  leader: boolean;
  /** The last try reached the server (false from `disconnected` to `reconnected`). */
  connected: boolean;
  /** Within `warnBefore` of the expiry: only `extend()` keeps the session now. */
  expiring: boolean;
  expired: boolean;
  health: HealthStatus;
  checks: HealthChecks | null;
  /** From the server's keepalive answer. */
  tick: number;
  timeout: number;
  maxRetries: number;
  healthCheckFrequency: number;
  /** Last keepalive that extended the session (in any tab). */
  lastPingAt: number;
  /** Last time the server answered at all (keepalive or probe). */
  lastOkAt: number;
  /** Last time the server's health was read (a keepalive answer or a health check). */
  lastHealthAt: number;
  lastAttemptAt: number;
  /** When the next tick falls; it pings only if the user was active (else it probes). */
  nextPingAt: number;
  disconnectedAt: number;
  lastActivityAt: number;
  /** Idle expiry and the session's hard limit, converted to the page clock. */
  expiresAt: number;
  absoluteExpiresAt: number;
  /** Milliseconds left before `expiresAt`, or null before the first answer. */
  expiresIn: number | null;
  /** The server's idle timeout of the session (not the `idleTimeout` option). */
  idleTimeout: number;
  /** Message of the last failed try. */
  error: string | null;
}

/** One try, in this tab or in the tab that pings for it. */
export interface PingEvent {
  ok: boolean;
  /** A keepalive (true) or a probe of an idle user's server (false). */
  keep: boolean;
  /** Page-clock time the try started. */
  at: number;
  /** 0 for the first try of a tick, then 1..maxRetries. */
  attempt: number;
  error?: string;
}

export interface KeepaliveEvents {
  /** `checks` is null when the health came from /health, which shows no checks to browsers. */
  health: { status: HealthStatus; checks: HealthChecks | null; previous: HealthStatus };
  disconnected: { error: string; lastOkAt: number };
  reconnected: { downtime: number };
  /** Each second of the last `warnBefore` ms; `final` when the absolute lifetime is what ends it. */
  expiring: { secondsLeft: number; final: boolean };
  /** `server`: a 401; `idle`: the countdown ran out; `logout`: `logout()` in any tab. */
  expired: { reason: 'server' | 'idle' | 'logout' };
  ping: PingEvent;
  /** No activity for `idleTimeout` ms; `idleFor` is how long (in ms) there has been none. */
  idle: { idleFor: number };
  /** Activity again after `idle`; `idleFor` is how long the user was away (in ms). */
  active: { idleFor: number };
}

/** The JSON of `POST /api/v1/session`, which `start()` accepts to skip its first ping. */
export interface SignInAnswer {
  session: { expiresAt: string; absoluteExpiresAt: string; idleTimeoutMs: number; createdAt?: string };
  keepalive: { tickMs: number; timeoutMs: number; maxRetries: number; healthCheckFrequency: number };
  serverHealth?: { status: HealthStatus; checks: HealthChecks };
  serverTime: string;
}

export interface Keepalive {
  /** Starts keeping the session alive; pings at once unless given the sign-in answer. */
  start(signIn?: SignInAnswer): void;
  /** Stops pinging and listening in this tab; the session is left to the server. */
  stop(): void;
  /** Stops pinging and listening for activity in this tab until `resume()`; another tab takes over. */
  pause(): void;
  /** Undoes `pause()`: expires at once if the session ran out meanwhile, else pings if stale. */
  resume(): void;
  /** Pings now whatever the activity ("Stay signed in"); resolves true if the session was extended. */
  extend(): Promise<boolean>;
  /** Ends the session on the server and in every tab. */
  logout(): Promise<void>;
  /** Subscribes; returns a function that unsubscribes. */
  on<K extends keyof KeepaliveEvents>(type: K, handler: (event: KeepaliveEvents[K]) => void): () => void;
  off<K extends keyof KeepaliveEvents>(type: K, handler: (event: KeepaliveEvents[K]) => void): void;
  readonly state: Readonly<KeepaliveState>;
}

export type CreateKeepalive = (options?: KeepaliveOptions) => Keepalive;

/** Creates a keepalive client. Nothing happens, and nothing of the browser is touched, until `start()`. */
export declare function createKeepalive(options?: KeepaliveOptions): Keepalive;
export default createKeepalive;
