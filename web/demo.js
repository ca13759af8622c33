// The demo page: signs in, then shows what the keepalive client knows. Loaded as an ES module, so it
// also shows the client used that way; the page's Content-Security-Policy allows no inline code.
import { createKeepalive } from '/keepalive.mjs';

const client = createKeepalive();
const $ = (id) => document.getElementById(id);
const badge = $('badge');
const dialog = $('stay');

// Set once a session was seen, so a first visit reads "sign in" rather than "your session expired".
let hadSession = false;

function clock(t) {
  return t ? new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '–';
}

function duration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const m = Math.floor(total / 60);
  const s = String(total % 60).padStart(2, '0');
  return m >= 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min` : `${m}:${s}`;
}

function log(text) {
  const item = document.createElement('li');
  const time = document.createElement('time');
  time.textContent = clock(Date.now());
  item.append(time, ' ', text);
  $('events').prepend(item);
  while ($('events').children.length > 8) $('events').lastChild.remove();
}

function render() {
  const s = client.state;
  const status = s.connected ? s.health : 'disconnected';
  badge.className = `badge ${status}`;
  badge.textContent = status === 'unknown' ? 'checking…' : status;
  // Running without a confirmed session happens when the page loads while the server is away.
  const signedIn = s.running && s.lastPingAt > 0;
  $('signed-in').hidden = !signedIn;
  $('signed-out').hidden = signedIn;
  if (!signedIn) return;
  const now = Date.now();
  const checks = s.checks ? Object.entries(s.checks).map(([k, v]) => `${k} ${v}`).join(', ') : '';
  $('server').textContent = s.connected ? `${s.health}${checks ? ` (${checks})` : ''}` : 'unreachable, retrying every tick';
  $('last-ping').textContent = s.lastPingAt ? `${clock(s.lastPingAt)} (${duration(now - s.lastPingAt)} ago)` : '–';
  $('next-ping').textContent = s.nextPingAt
    ? `${clock(s.nextPingAt)} (in ${duration(s.nextPingAt - now)}${now - s.lastActivityAt < s.tick ? '' : ', only if you are active'})`
    : '–';
  $('presence').textContent = s.idle ? `away for ${duration(now - s.lastActivityAt)}: the session is no longer extended` : 'here';
  $('countdown').textContent = s.expiresIn == null ? '–' : duration(s.expiresIn);
  $('absolute').textContent = s.absoluteExpiresAt ? `${clock(s.absoluteExpiresAt)} (in ${duration(s.absoluteExpiresAt - now)})` : '–';
  $('role').textContent = s.leader ? 'pings for every open tab' : 'listens to the tab that pings';
  if (!s.expiring && dialog.open) dialog.close();
}

function signedOut(message) {
  if (dialog.open) dialog.close();
  $('notice').hidden = !message;
  $('notice').textContent = message || '';
  render();
}

client.on('ping', (p) => {
  if (p.ok && p.keep) hadSession = true;
  if (!p.ok) log(`ping failed (try ${p.attempt + 1}): ${p.error}`);
  render();
});
client.on('health', (h) => { log(`server ${h.status}`); render(); });
client.on('disconnected', () => { log('server lost'); render(); });
client.on('reconnected', (r) => { log(`server back after ${duration(r.downtime)}`); render(); });
client.on('idle', () => { log('you went idle'); render(); });
client.on('active', (e) => { log(`you are back after ${duration(e.idleFor)}`); render(); });
client.on('expiring', (e) => {
  $('stay-seconds').textContent = e.secondsLeft;
  if (!dialog.open) {
    $('stay-error').hidden = true;
    dialog.showModal();
    log(e.final ? 'session reaches its maximum lifetime soon' : 'session about to end');
  }
});
client.on('expired', (e) => {
  const was = hadSession;
  hadSession = false;
  if (!was && e.reason === 'server') return signedOut('');
  log(e.reason === 'logout' ? 'signed out' : 'session ended');
  signedOut(e.reason === 'logout' ? 'You signed out.' : 'Your session has ended. Sign in again to continue.');
});

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = $('sign-in-error');
  error.hidden = true;
  try {
    const res = await fetch('/api/v1/session', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ data: { name: $('name').value } }),
    });
    if (res.status !== 201) throw new Error(`the server answered ${res.status}`);
    hadSession = true;
    $('notice').hidden = true;
    client.stop();
    client.start(await res.json());
    log('signed in');
    render();
  } catch (e) {
    error.textContent = `Could not sign in: ${e.message}`;
    error.hidden = false;
  }
});

async function stay() {
  $('stay-extend').disabled = true;
  const ok = await client.extend();
  $('stay-extend').disabled = false;
  if (ok) {
    dialog.close();
    log('stayed signed in');
  }
  else if (client.state.running) {
    $('stay-error').textContent = 'The server did not answer; trying again at the next tick.';
    $('stay-error').hidden = false;
  }
  render();
}

$('stay-extend').addEventListener('click', stay);
// Escape would only hide the question; the session would still end, so it counts as "stay".
dialog.addEventListener('cancel', (event) => { event.preventDefault(); stay(); });
$('stay-sign-out').addEventListener('click', () => client.logout());
$('sign-out').addEventListener('click', () => client.logout());

setInterval(render, 1000);
client.start();
render();
