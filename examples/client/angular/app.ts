// The Angular demo: sign in, then the session panel, which injects the service. Compiled in the
// browser (JIT: @angular/compiler is imported first by main.ts), so no Angular CLI.
import { Component, afterEveryRender, inject, signal, type ApplicationRef, type EnvironmentProviders, type OnDestroy } from '@angular/core';
import { bootstrapApplication } from '@angular/platform-browser';
import { KEEPALIVE_OPTIONS, KeepaliveService } from './keepalive.service';
import { OPTIONS, signIn, status, timeLeft } from '../shared/demo.js';

@Component({
  selector: 'app-session',
  template: `
    <section>
      <p>Server: <b id="health">{{ state().health }}</b>, pinged every <span id="tick">{{ state().tick / 1000 }} s</span></p>
      <p>Session: <span id="status">{{ status(state()) }}</span>, expires in <span id="expires">{{ timeLeft(state().expiresAt, now()) }}</span></p>
      <p>You are <b id="presence">{{ state().idle ? 'idle' : 'active' }}</b></p>
      <button id="extend" (click)="keepalive.extend()">Stay signed in</button>
      <button id="pause" (click)="keepalive.pause()">Pause</button>
      <button id="resume" (click)="keepalive.resume()">Resume</button>
      <button id="logout" (click)="keepalive.logout()">Log out</button>
    </section>`,
})
class SessionComponent implements OnDestroy {
  protected readonly keepalive = inject(KeepaliveService);
  protected readonly state = this.keepalive.state;
  protected readonly now = signal(Date.now());
  private readonly timer = setInterval(() => this.now.set(Date.now()), 1000);
  protected readonly status = status;
  protected readonly timeLeft = timeLeft;
  ngOnDestroy() { clearInterval(this.timer); }
}

@Component({
  selector: 'app-root',
  imports: [SessionComponent],
  template: `@if (signedIn()) { <app-session /> } @else { <button id="sign-in" (click)="signIn()">Sign in</button> }`,
})
class AppComponent {
  protected readonly signedIn = signal(false);
  protected signIn() { signIn().then(() => this.signedIn.set(true)); }
}

/** Starts the demo with zone.js or zoneless change detection. */
export async function start(changeDetection: EnvironmentProviders): Promise<ApplicationRef> {
  const app = await bootstrapApplication(AppComponent, {
    providers: [changeDetection, { provide: KEEPALIVE_OPTIONS, useValue: OPTIONS }],
  });
  // The browser tests destroy the app, and with it the root injector, to see the client stop;
  // and count renders, to see that the client's listeners and timers cause none.
  let renders = 0;
  afterEveryRender(() => renders++, { injector: app.injector });
  (window as unknown as { demo: object }).demo = { unmount: () => app.destroy(), renders: () => renders };
  return app;
}
