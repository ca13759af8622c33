// keepalive-client as a React hook. Call it once, where the signed-in part of the app mounts, and
// pass what it returns down (props or a context): each component that calls it runs a client.
import { useEffect, useState, useSyncExternalStore } from 'react';
import { createKeepalive, type KeepaliveOptions, type KeepaliveState } from 'keepalive-client';

// Every event after which `state` may have changed.
const EVENTS = ['health', 'disconnected', 'reconnected', 'expiring', 'expired', 'ping', 'idle', 'active'] as const;

function createStore(options?: KeepaliveOptions) {
  const client = createKeepalive(options);
  const listeners = new Set<() => void>();
  // useSyncExternalStore needs the same object until something changes, and `client.state` is a
  // fresh copy at each read: keep one, replaced after each event and each method call.
  let snapshot: KeepaliveState = client.state;
  const refresh = () => {
    snapshot = client.state;
    listeners.forEach((listener) => listener());
  };
  EVENTS.forEach((type) => client.on(type, refresh));
  // pause() and resume() change the state without an event.
  const then = <A extends unknown[], R>(method: (...args: A) => R) => (...args: A): R => {
    const result = method(...args);
    refresh();
    return result;
  };
  return {
    client,
    subscribe(listener: () => void) {
      listeners.add(listener);
      return () => { listeners.delete(listener); };
    },
    snapshot: () => snapshot,
    start: then(client.start),
    stop: then(client.stop),
    pause: then(client.pause),
    resume: then(client.resume),
  };
}

/**
 * Keeps the session alive while the calling component is mounted, and re-renders it when the
 * client's state changes. `options` are read at the first render only.
 */
export function useKeepalive(options?: KeepaliveOptions) {
  // Creating a client touches nothing, so a render that React throws away costs nothing.
  const [store] = useState(() => createStore(options));
  const state = useSyncExternalStore(store.subscribe, store.snapshot, store.snapshot);
  useEffect(() => {
    let mounted = true;
    // StrictMode mounts, unmounts and mounts again in one go (in development): starting a
    // microtask later lets only the mount that stays start the client and send the first ping.
    queueMicrotask(() => { if (mounted) store.start(); });
    return () => {
      mounted = false;
      store.stop();
    };
  }, [store]);
  const { client, pause, resume } = store;
  // `client` is there for on(): useEffect(() => client.on('expiring', ask), [client]).
  return { state, client, extend: client.extend, logout: client.logout, pause, resume };
}
