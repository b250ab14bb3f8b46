// The chat page on a cluster in jwt mode (`lab up --auth`): the token arrives in the URL
// fragment and leaves the address bar, the nick is the token's and cannot be edited, two
// signed-in pages chat, a token for other rooms gets no socket, and when a page's token
// expires the server closes it with 4001, the page reloads (no refresh URL configured),
// stays out while it has no token, and once the login cookie (`wsmesh_token`) is renewed
// it is back with every message, each once.
//
//   WSMESH_CHAT_URL=https://127.0.0.1:18443/#token=… WSMESH_URL_A=https://127.0.0.1:18443/ \
//     WSMESH_LAB=target/debug/lab WSMESH_AUTH_CONFIG=/tmp/…/app1.toml \
//     WSMESH_CA_FILE=certs/dev-ca.pem node lab/browser/auth_page.mjs
//
// WSMESH_CHAT_URL is the `chat` URL of the ready line, WSMESH_AUTH_CONFIG the config its
// "more tokens" line names (other tokens are minted with `lab token`). Last line:
// `N passed, M failed`; exit 1 on any failure. Bounded by WSMESH_TEST_TIMEOUT_MS (60 s).
import { execFileSync } from 'node:child_process';

import {
  Run, Tally, assertSameLog, messages, must, openPage, launch, sendText, settings, sleep, uniqueRoom,
  waitConnected, waitSettled,
} from './lib.mjs';

const cfg = settings();
const tally = new Tally();
const errors = [];
const test = new Run(cfg, tally, 'auth_page');
const chatUrl = process.env.WSMESH_CHAT_URL || '';
const lab = process.env.WSMESH_LAB || 'target/debug/lab';
const authConfig = process.env.WSMESH_AUTH_CONFIG || '';

/** A token from `lab token` for `sub` named `name`, for `rooms`, valid `ttl`. */
function token(sub, name, rooms, ttl) {
  return execFileSync(lab, ['token', '--config', authConfig, '--sub', sub, '--name', name, '--rooms', rooms, '--ttl', ttl])
    .toString().trim();
}

/** The page URL for `room` with `tok` in the fragment. */
function pageUrl(room, tok) {
  const u = new URL(cfg.urlA);
  u.searchParams.set('room', room);
  u.hash = `token=${tok}`;
  return u.toString();
}

/** Close codes of every socket of the tab, kept across reloads (sessionStorage). */
function recordCloses() {
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('close', (e) => {
        sessionStorage.setItem('test.closes', `${sessionStorage.getItem('test.closes') || ''}${e.code},`);
      });
    }
  };
}

async function main() {
  must(chatUrl.includes('#token='), `WSMESH_CHAT_URL must carry #token=, got ${JSON.stringify(chatUrl)}`);
  must(authConfig, 'WSMESH_AUTH_CONFIG (the app config of `lab up --auth`) is required');
  test.browser = await launch(cfg);
  const room = uniqueRoom('auth');
  console.log(`# room ${room}; page ${cfg.urlA}`);
  const a = await openPage(test.browser, cfg, 'A', errors);
  const b = await openPage(test.browser, cfg, 'B', errors);
  const c = await openPage(test.browser, cfg, 'C', errors);
  test.pages = { a, b, c };
  await b.context().addInitScript(recordCloses);

  const signedIn = await tally.check('the token in the fragment opens the socket and leaves the address bar', async () => {
    const u = new URL(chatUrl);
    u.searchParams.set('room', room);
    await a.goto(u.toString(), { waitUntil: 'load' });
    await waitConnected(a, room);
    const hash = await a.evaluate(() => location.hash);
    must(!hash.includes('token'), `the address bar still has ${hash}`);
  });
  if (!signedIn) return;
  await tally.check("the nick is the token's name and the field is read-only", async () => {
    const [nick, readOnly] = await a.evaluate(() => [document.getElementById('app').dataset.nick, document.getElementById('nick').readOnly]);
    must(nick === 'dev' && readOnly, `nick ${JSON.stringify(nick)}, read-only ${readOnly}`);
  });
  // B's token lasts 6 s (+2 s leeway on the apps): long enough to chat, short enough to expire here.
  await tally.check('a second signed-in page chats with the first', async () => {
    await b.goto(pageUrl(room, token('bob', 'Bob', room, '6s')), { waitUntil: 'load' });
    await waitConnected(b, room);
    await sendText(a, 'from dev');
    await waitSettled(a, 1);
    await sendText(b, 'from Bob');
    await waitSettled(b, 2);
    await waitSettled(a, 2);
    const log = await messages(a);
    must(log.map((m) => m.nick).join() === 'dev,Bob', `nicks ${log.map((m) => m.nick)}`);
    assertSameLog(log, await messages(b));
  });
  await tally.check('a token for other rooms gets no socket', async () => {
    await c.goto(pageUrl(room, token('eve', 'Eve', 'other-*', '1h')), { waitUntil: 'load' });
    await c.waitForFunction(() => Number(document.getElementById('status').dataset.attempt) >= 2, null, { timeout: 10000 });
    const state = await c.evaluate(() => document.getElementById('status').dataset.state);
    must(state !== 'connected', 'C connected to a room its token does not allow');
  });
  await tally.check('an expired token closes the socket with 4001 and the page stays out without a new one', async () => {
    const deadline = Date.now() + 20000;
    let closes = '';
    while (!closes.includes('4001,') && Date.now() < deadline) {
      closes = await b.evaluate(() => sessionStorage.getItem('test.closes') || '').catch(() => '');
      await sleep(200);
    }
    must(closes.includes('4001,'), `close codes seen: ${JSON.stringify(closes)}`);
    await b.waitForLoadState('load');
    await sleep(1000);
    const state = await b.evaluate(() => document.getElementById('status').dataset.state);
    must(state !== 'connected', 'B connected again without a token');
  });
  await tally.check('with a renewed login cookie the page is back with every message, each once', async () => {
    await sendText(a, 'while Bob was away');
    await waitSettled(a, 3);
    await b.context().addCookies([{ name: 'wsmesh_token', value: token('bob', 'Bob', room, '1h'), url: cfg.urlA, secure: true, sameSite: 'Strict' }]);
    await waitConnected(b, room, 20000);
    await waitSettled(b, 3);
    const nick = await b.evaluate(() => document.getElementById('app').dataset.nick);
    must(nick === 'Bob', `B's nick is ${JSON.stringify(nick)}`);
    assertSameLog(await messages(a), await messages(b));
  });
  await tally.check('no page error and no CSP violation', async () => {
    must(errors.length === 0, errors.join(' | '));
  });
}

test.execute(main);
