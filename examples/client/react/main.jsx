// The React demo: sign in, then the session panel, which uses the hook. Rendered in StrictMode,
// whose double mount must leave one client running.
import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useKeepalive } from './useKeepalive';
import { OPTIONS, signIn, status, timeLeft } from '../shared/demo.js';

function useNow(every) {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), every);
    return () => clearInterval(timer);
  }, [every]);
  return now;
}

function Session() {
  const { state, extend, pause, resume, logout } = useKeepalive(OPTIONS);
  const now = useNow(1000);
  return (
    <section>
      <p>Server: <b id="health">{state.health}</b>, pinged every <span id="tick">{state.tick / 1000} s</span></p>
      <p>Session: <span id="status">{status(state)}</span>, expires in <span id="expires">{timeLeft(state.expiresAt, now)}</span></p>
      <p>You are <b id="presence">{state.idle ? 'idle' : 'active'}</b></p>
      <button id="extend" onClick={() => extend()}>Stay signed in</button>
      <button id="pause" onClick={() => pause()}>Pause</button>
      <button id="resume" onClick={() => resume()}>Resume</button>
      <button id="logout" onClick={() => logout()}>Log out</button>
    </section>
  );
}

function App() {
  const [signedIn, setSignedIn] = useState(false);
  if (signedIn) return <Session />;
  return <button id="sign-in" onClick={() => signIn().then(() => setSignedIn(true))}>Sign in</button>;
}

const root = createRoot(document.getElementById('app'));
root.render(<StrictMode><App /></StrictMode>);
// The browser tests unmount the app to see the client stop with it.
window.demo = { unmount: () => root.unmount() };
