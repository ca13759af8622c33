// What the three demo apps share and is no part of the recipes: signing in, and the countdown.

/** Creates a session as a real sign-in form would (the keepalive server's session endpoint). */
export async function signIn(user = 'demo') {
  const res = await fetch('/api/v1/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ data: { user } }),
  });
  if (!res.ok) throw new Error(`sign-in answered ${res.status}`);
}

/**
 * The time left before `expiresAt` as m:ss, or a dash before the first answer.
 * @param {number} expiresAt page-clock ms, 0 for unknown
 * @param {number} now page-clock ms
 */
export function timeLeft(expiresAt, now) {
  if (!expiresAt) return '–';
  // Rounded down: the demos' `now` may be up to a second old, and the countdown must not show
  // more than the server's idle timeout after a ping.
  const seconds = Math.max(0, Math.floor((expiresAt - now) / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

/**
 * What the session is doing, in the demos' words.
 * @param {{ expired: boolean, paused: boolean, running: boolean }} state
 */
export function status(state) {
  return state.expired ? 'signed out' : state.paused ? 'paused' : state.running ? 'running' : 'stopped';
}

/** The options the demos give the client: idle after one minute without activity. */
export const OPTIONS = { idleTimeout: 60000 };
