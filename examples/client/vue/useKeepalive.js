// keepalive-client as a Vue composable. Call it in the setup of the component whose lifetime the
// session should have (where the signed-in part of the app mounts); each call runs a client.
import { onMounted, onUnmounted, readonly, shallowRef } from 'vue';
import { createKeepalive } from 'keepalive-client';

// Every event after which `state` may have changed.
const EVENTS = /** @type {const} */ (['health', 'disconnected', 'reconnected', 'expiring', 'expired', 'ping', 'idle', 'active']);

/**
 * Keeps the session alive from mount to unmount, with the client's state as a read-only ref.
 * @param {import('keepalive-client').KeepaliveOptions} [options]
 */
export function useKeepalive(options) {
  const client = createKeepalive(options);
  // A shallowRef: each change replaces the whole snapshot (`client.state` is a fresh copy), so
  // deep reactivity would only add proxies.
  const state = shallowRef(client.state);
  const refresh = () => { state.value = client.state; };
  const offs = EVENTS.map((type) => client.on(type, refresh));
  /**
   * pause() and resume() change the state without an event.
   * @template {unknown[]} A @template R
   * @param {(...args: A) => R} method
   * @returns {(...args: A) => R}
   */
  const then = (method) => (...args) => {
    const result = method(...args);
    refresh();
    return result;
  };
  // Mounting happens in the browser only, so server-side rendering never starts a client.
  onMounted(() => then(client.start)());
  onUnmounted(() => {
    offs.forEach((off) => off());
    client.stop();
  });
  // `client` is there for on(): client.on('expiring', ask).
  return {
    state: readonly(state),
    client,
    extend: client.extend,
    logout: client.logout,
    pause: then(client.pause),
    resume: then(client.resume),
  };
}
