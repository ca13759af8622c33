// keepalive-client as an Angular service: one client for the application, started when the
// service is first injected and stopped when its injector is destroyed. Provided in a
// component's `providers` instead, it lives and dies with that component.
import { DestroyRef, Injectable, InjectionToken, NgZone, PLATFORM_ID, inject, signal } from '@angular/core';
import { isPlatformBrowser } from '@angular/common';
import { createKeepalive, type KeepaliveOptions, type KeepaliveState } from 'keepalive-client';

/** The client's options: `{ provide: KEEPALIVE_OPTIONS, useValue: { idleTimeout: 120000 } }`. */
export const KEEPALIVE_OPTIONS = new InjectionToken<KeepaliveOptions>('KEEPALIVE_OPTIONS');

// Every event after which `state` may have changed.
const EVENTS = ['health', 'disconnected', 'reconnected', 'expiring', 'expired', 'ping', 'idle', 'active'] as const;

@Injectable({ providedIn: 'root' })
export class KeepaliveService {
  private readonly zone = inject(NgZone);
  /** For on(): `keepalive.client.on('expiring', ask)`. */
  readonly client = createKeepalive(inject(KEEPALIVE_OPTIONS, { optional: true }) ?? undefined);
  private readonly snapshot = signal<KeepaliveState>(this.client.state);
  /** The client's state, replaced after each of its events. */
  readonly state = this.snapshot.asReadonly();

  constructor() {
    const offs = EVENTS.map((type) => this.client.on(type, () => this.refresh()));
    inject(DestroyRef).onDestroy(() => {
      offs.forEach((off) => off());
      this.client.stop();
    });
    // Server-side rendering creates the service too, but has no session to keep.
    if (isPlatformBrowser(inject(PLATFORM_ID))) this.outside(() => this.client.start());
  }

  extend(): Promise<boolean> { return this.outside(() => this.client.extend()); }
  logout(): Promise<void> { return this.outside(() => this.client.logout()); }
  pause(): void { this.outside(() => this.client.pause()); }
  resume(): void { this.outside(() => this.client.resume()); }

  // The client's listeners (pointermove...), timers and fetches are set up outside Angular's
  // zone, so that with zone.js they do not run change detection each time they fire; the
  // events that change the state come back in through refresh(). Without zone.js, both are no-ops.
  private outside<R>(work: () => R): R {
    const result = this.zone.runOutsideAngular(work);
    this.refresh();
    return result;
  }

  private refresh(): void {
    this.zone.run(() => this.snapshot.set(this.client.state));
  }
}
