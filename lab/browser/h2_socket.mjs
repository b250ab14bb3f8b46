// The chat page loaded through the lb over HTTP/2 opens its WebSocket on the same
// connection (RFC 8441, which Chromium uses only on an HTTP/2 connection that advertised
// it): the lb counts one TLS handshake for the page, its assets and the socket.
//
//   WSMESH_URL_A=https://127.0.0.1:8443/ WSMESH_LB_ADMIN=http://127.0.0.1:8404/ \
//     WSMESH_CA_FILE=certs/dev-ca.pem node lab/browser/h2_socket.mjs
//
// WSMESH_LB_ADMIN is the lb's admin listener (loopback); its GET /api/frontends gives the
// TLS handshakes per frontend, read before and after the page. The page then sends a
// message and sees it confirmed, over that socket. Last line: `N passed, M failed`;
// exit 1 on any failure. Bounded by WSMESH_TEST_TIMEOUT_MS (60 s).
import {
  Run, Tally, isLoopbackUrl, launch, must, openPage, sendText, settings, uniqueRoom,
  waitConnected, waitSettled, withRoom,
} from './lib.mjs';

const cfg = settings();
const tally = new Tally();
const errors = [];
const test = new Run(cfg, tally, 'h2_socket');
const admin = process.env.WSMESH_LB_ADMIN || 'http://127.0.0.1:8404/';
if (!isLoopbackUrl(admin)) {
  console.error(`refusing to run: ${admin} is not an http(s) URL on loopback`);
  process.exit(2);
}

/** TLS handshakes the lb has completed, over all its TLS frontends. */
async function handshakes() {
  const resp = await fetch(new URL('/api/frontends', admin));
  must(resp.ok, `admin /api/frontends answered ${resp.status}`);
  const body = await resp.json();
  return body.frontends.filter((f) => f.tls).reduce((n, f) => n + f.tls_handshakes, 0);
}

async function main() {
  must(new URL(cfg.urlA).protocol === 'https:', `WSMESH_URL_A must be the lb's https URL, not ${cfg.urlA}`);
  test.browser = await launch(cfg);
  const room = uniqueRoom('h2');
  console.log(`# room ${room}; lb ${cfg.urlA}; admin ${admin}`);
  const page = await openPage(test.browser, cfg, 'page', errors);
  test.pages = { page };

  const before = await handshakes();
  const opened = await tally.check('the page loads over HTTP/2 and connects its WebSocket', async () => {
    await page.goto(withRoom(cfg.urlA, room), { waitUntil: 'load' });
    const instance = await waitConnected(page, room);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    must(protocol === 'h2', `the page came over ${JSON.stringify(protocol)}`);
    console.log(`# connected to ${instance}`);
  });
  if (!opened) return;
  await tally.check('one TLS handshake for the page and its WebSocket', async () => {
    const after = await handshakes();
    must(after - before === 1, `the lb counted ${after - before} TLS handshakes (${before} before, ${after} after)`);
  });
  await tally.check('a message sent over that socket is confirmed', async () => {
    await sendText(page, 'over one connection');
    await waitSettled(page, 1);
    const after = await handshakes();
    must(after - before === 1, `${after - before} TLS handshakes after sending`);
  });
  await tally.check('no page error', async () => {
    must(errors.length === 0, errors.join('; '));
  });
  await test.screenshots();
}

test.execute(main);
