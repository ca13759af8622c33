// The Express application of the seed's stack, as keepalive's tests and benchmark run it:
// express-session with connect-redis and node-redis, a login that writes the session, pages
// that read and change it, a logout, and the application's own keepalive route (the one
// keepalive takes over). Settings come from the environment:
//
//   PORT (3000), REDIS_URL, SESSION_SECRETS (a JSON array; the first signs), PREFIX (sess:),
//   COOKIE_NAME (connect.sid), MAX_AGE_MS (none: a browser-session cookie), ROLLING (false),
//   KEEPALIVE_URL (when set, /api/v1/keepalive is proxied there: the guide's few lines of
//   Express for a team without a reverse proxy).
//
// /livez and /readyz answer without a session, so that keepalive's load benchmark can measure
// this application too (bench/express.sh).
import express from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';

const port = Number(process.env.PORT || 3000);
const secrets = JSON.parse(process.env.SESSION_SECRETS || '["keyboard cat"]');
const maxAge = process.env.MAX_AGE_MS ? Number(process.env.MAX_AGE_MS) : undefined;

const client = createClient({ url: process.env.REDIS_URL });
client.on('error', (err) => console.error(`[redis] ${err.message}`));
await client.connect();

const app = express();
app.use(express.json());

app.get(['/livez', '/readyz'], (req, res) => res.type('text/plain').send('ok'));

// The migration guide's proxy for a team without nginx: keepalive answers the keepalive route
// on the application's own origin, with the browser's cookie, and its Set-Cookie comes back.
if (process.env.KEEPALIVE_URL) {
  app.get(['/api/v1/keepalive', '/api/v1/keepalive/'], async (req, res) => {
    try {
      const answer = await fetch(new URL(req.originalUrl, process.env.KEEPALIVE_URL), {
        headers: {
          cookie: req.headers.cookie ?? '',
          'x-forwarded-for': req.ip,
        },
        signal: AbortSignal.timeout(8000),
      });
      for (const cookie of answer.headers.getSetCookie()) res.append('Set-Cookie', cookie);
      res.status(answer.status).type('application/json').set('Cache-Control', 'no-store');
      res.send(Buffer.from(await answer.arrayBuffer()));
    } catch (err) {
      res.status(503).json({ error: 'keepalive_unreachable', message: String(err) });
    }
  });
}

app.use(
  session({
    store: new RedisStore({ client, prefix: process.env.PREFIX ?? 'sess:' }),
    secret: secrets,
    name: process.env.COOKIE_NAME || 'connect.sid',
    resave: false,
    saveUninitialized: false,
    rolling: process.env.ROLLING === 'true',
    cookie: { maxAge, httpOnly: true, sameSite: 'lax', path: '/' },
  }),
);

// Signs `user` in (a made-up one without a body: the benchmark's many users); `maxAgeMs`
// gives this session a lifetime of its own, as a "remember me" box does.
app.post('/login', (req, res, next) => {
  const user = req.body?.user ?? `user-${Math.random().toString(36).slice(2)}`;
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.passport = { user };
    req.session.cart = req.body?.cart ?? [];
    if (req.body?.maxAgeMs) req.session.cookie.maxAge = req.body.maxAgeMs;
    req.session.save((err) => (err ? next(err) : res.json({ user })));
  });
});

// Changes the lifetime of the signed-in session (the "remember me" box ticked or unticked
// later); the session is saved with it.
app.post('/max-age', (req, res, next) => {
  if (!req.session.passport) return res.status(401).json({ error: 'signed_out' });
  req.session.remember = req.body.maxAgeMs;
  req.session.cookie.maxAge = req.body.maxAgeMs;
  req.session.save((err) => (err ? next(err) : res.status(204).end()));
});

app.get('/me', (req, res) => {
  if (!req.session.passport) return res.status(401).json({ error: 'signed_out' });
  res.json({ user: req.session.passport.user, cart: req.session.cart });
});

app.post('/cart', (req, res) => {
  if (!req.session.passport) return res.status(401).json({ error: 'signed_out' });
  req.session.cart = [...(req.session.cart ?? []), req.body.item];
  res.json({ cart: req.session.cart });
});

app.post('/logout', (req, res, next) => {
  req.session.destroy((err) => (err ? next(err) : res.status(204).end()));
});

// The application's own keepalive route, as the seed's: the session middleware loaded the
// session and touches it when the answer is sent.
app.get(['/api/v1/keepalive', '/api/v1/keepalive/'], (req, res) => {
  const health = {
    status: client.isReady ? 'healthy' : 'degraded',
    checks: { redis: client.isReady ? 'ok' : 'offline', memory: 'ok' },
  };
  if (!req.session.passport) {
    return res.status(401).json({ error: 'session_expired', serverHealth: health });
  }
  res.json({ serverHealth: health });
});

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    client.quit().finally(() => process.exit(0));
  });
}
