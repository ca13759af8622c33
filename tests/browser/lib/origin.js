// A second origin for the cross-origin tests: a plain HTTP server on 127.0.0.1 at another port than
// the keepalive server's, so that its pages are cross-origin but same-site to keepalive (as an app
// at app.example.com is to keepalive at keepalive.example.com: SameSite=Lax cookies go along).

import { createServer } from 'node:http';

/** Serves `pages` (path to HTML, or to a function returning it) until `close()`. */
export async function startOrigin(pages) {
  const server = createServer((req, res) => {
    const page = pages[new URL(req.url, 'http://origin').pathname];
    if (page === undefined) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(typeof page === 'function' ? page() : page);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((ok) => { server.closeAllConnections(); server.close(ok); }),
  };
}
