// The page's edge cases, against the in-memory mock (mock_server.mjs), which this test
// starts itself, once per scenario with that scenario's faults, on 127.0.0.1:19031/19032
// (MOCK_PORTS to move). No cluster needed.
//
//   node lab/browser/page_edges.mjs
//
// Scenarios: ack before chat and chat before ack (each message once, placeholder
// replaced); a 1012 drain close (reconnect within the 0–500 ms jitter, resume); history
// `truncated` (the "older messages were skipped" notice, once, in place); a server
// `too_large` (marked "not sent", dismissable, the others still go); rate limiting
// ("slow down", every message still lands once); the outbox surviving a reload while
// the server is down. Last line `N passed, M failed`; exit 1 on any failure.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Run, Tally, assertSameLog, launch, messages, must, openPage, sendText,
  settings, sleep, uniqueRoom, waitConnected, waitSettled, withRoom,
} from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const ports = (process.env.MOCK_PORTS || '19031,19032').split(',');
process.env.WSMESH_URL_A = `http://127.0.0.1:${ports[0]}/`;
process.env.WSMESH_URL_B = `http://127.0.0.1:${ports[1]}/`;
if (!process.env.WSMESH_TEST_TIMEOUT_MS) process.env.WSMESH_TEST_TIMEOUT_MS = '120000';
const cfg = settings();
const tally = new Tally();
const errors = [];
let mock = null;

async function startMock(env) {
  await stopMock();
  mock = spawn(process.execPath, [join(here, 'mock_server.mjs')], {
    env: { ...process.env, MOCK_PORTS: ports.join(','), ...env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  mock.stdout.on('data', (d) => { out += d; });
  for (let i = 0; i < 50; i++) {
    if ((out.match(/listening/g) || []).length === 2) return;
    if (mock.exitCode !== null) break;
    await sleep(100);
  }
  throw new Error(`mock did not start (ports ${ports.join(',')} taken?)`);
}

async function stopMock() {
  if (!mock) return;
  const m = mock;
  mock = null;
  if (m.exitCode === null) {
    const gone = new Promise((r) => m.once('exit', r));
    m.kill('SIGTERM');
    await Promise.race([gone, sleep(2000)]);
    if (m.exitCode === null) m.kill('SIGKILL');
  }
}

const post = (base, path) => fetch(new URL(path, base), { method: 'POST' }).then((r) => r.text());

const test = new Run(cfg, tally, 'page_edges', { beforeExit: stopMock });

/** Two fresh pages (own contexts) in a new room, A on the first mock port, B on the second. */
async function pair(prefix) {
  const room = uniqueRoom(prefix);
  const a = await openPage(test.browser, cfg, 'A', errors);
  const b = await openPage(test.browser, cfg, 'B', errors);
  await a.goto(withRoom(cfg.urlA, room), { waitUntil: 'domcontentloaded' });
  await b.goto(withRoom(cfg.urlB, room), { waitUntil: 'domcontentloaded' });
  await waitConnected(a, room);
  await waitConnected(b, room);
  const close = async () => { await a.context().close(); await b.context().close(); };
  return { room, a, b, close };
}

async function exchange(a, b, n, tag) {
  const sent = [];
  for (let i = 1; i <= n; i++) {
    await sendText(a, `${tag} A ${i}`); sent.push(`${tag} A ${i}`);
    await sendText(b, `${tag} B ${i}`); sent.push(`${tag} B ${i}`);
  }
  return sent;
}

async function sameAndOnce(a, b, sent) {
  await Promise.all([waitSettled(a, sent.length), waitSettled(b, sent.length)]);
  const la = await messages(a);
  assertSameLog(la, await messages(b));
  must(la.length === sent.length, `${la.length} shown, ${sent.length} sent`);
  for (const t of sent) must(la.filter((m) => m.body === t).length === 1, `${JSON.stringify(t)} not shown exactly once`);
}

async function main() {
  test.browser = await launch(cfg);

  for (const [name, env] of [['ack before chat', { MOCK_ECHO_DELAY_MS: '300' }], ['chat before ack', { MOCK_ACK_DELAY_MS: '300' }]]) {
    await tally.check(`${name}: every message once on both pages, no placeholder left`, async () => {
      await startMock(env);
      const p = await pair('order');
      try {
        await sameAndOnce(p.a, p.b, await exchange(p.a, p.b, 4, name));
      } finally { await p.close(); }
    });
  }

  await tally.check('drain close 1012: A reconnects at once (jitter ≤ 500 ms) and resumes', async () => {
    await startMock({});
    const p = await pair('drain');
    try {
      const sent = await exchange(p.a, p.b, 2, 'pre');
      await waitSettled(p.a, sent.length);
      const t0 = Date.now();
      await post(cfg.urlA, '/mock/drop?code=1012');
      await p.a.waitForFunction(() => document.getElementById('status').dataset.lastClose === '1012', null, { timeout: 3000 });
      await waitConnected(p.a, p.room, 3000);
      const took = Date.now() - t0;
      console.log(`# reconnected ${took} ms after the 1012`);
      must(took < 1500, `reconnect took ${took} ms`);
      sent.push(...await exchange(p.a, p.b, 2, 'post'));
      await sameAndOnce(p.a, p.b, sent);
    } finally { await p.close(); }
  });

  await tally.check('history truncated: "older messages were skipped" shown once, before the first resumed message', async () => {
    await startMock({ MOCK_MAXLEN: '5' });
    const p = await pair('trunc');
    try {
      await sendText(p.b, 'before the gap');
      await waitSettled(p.a, 1);
      await post(cfg.urlA, '/mock/down');
      for (let i = 1; i <= 8; i++) await sendText(p.b, `while A away ${i}`);
      await waitSettled(p.b, 9);
      await post(cfg.urlA, '/mock/up');
      await waitConnected(p.a, p.room, 15000);
      await waitSettled(p.a, 6);
      const items = await p.a.$$eval('#messages li', (els) => els.map((e) => (e.dataset.notice ? '[skipped]' : e.querySelector('.body').textContent)));
      must(JSON.stringify(items) === JSON.stringify(['before the gap', '[skipped]', 'while A away 4', 'while A away 5', 'while A away 6', 'while A away 7', 'while A away 8']),
        `list is ${JSON.stringify(items)}`);
      must((await p.a.textContent('li[data-notice]')) === 'older messages were skipped', 'notice text');
    } finally { await p.close(); }
  });

  await tally.check('server too_large: that message is marked "not sent" and can be dismissed; the others go', async () => {
    await startMock({ MOCK_MAX_BODY: '100' });
    const p = await pair('large');
    try {
      await sendText(p.a, 'small one');
      await sendText(p.a, 'x'.repeat(150));
      await sendText(p.a, 'small two');
      await p.a.waitForSelector('#messages li[data-state="failed"]', { timeout: 5000 });
      await waitSettled(p.b, 2);
      must(await p.a.$$eval('#messages li[data-id]', (e) => e.length) === 2, 'the small ones are not both confirmed');
      must((await p.a.textContent('#messages li[data-state="failed"] .mark')) === 'not sent: too large', 'mark text');
      must((await p.a.textContent('#notice')) === 'message too large', 'notice text');
      await p.a.click('#messages li[data-state="failed"] button.dismiss');
      must(await p.a.$$eval('#messages li[data-cid]', (e) => e.length) === 0, 'still shown after dismiss');
      must(await p.a.evaluate(() => sessionStorage.getItem('wsmesh.outbox')) === null, 'still in the stored outbox');
    } finally { await p.close(); }
  });

  await tally.check('rate limited: "slow down" shown, every message of a burst of 30 still lands once', async () => {
    await startMock({ MOCK_RATE_BURST: '10', MOCK_RATE_PER_SEC: '10' });
    const p = await pair('rate');
    try {
      const sent = await p.a.evaluate(() => {
        const text = document.getElementById('text');
        const out = [];
        for (let i = 1; i <= 30; i++) {
          text.value = `burst ${i}`;
          document.getElementById('composer').requestSubmit();
          out.push(`burst ${i}`);
        }
        return out;
      });
      await p.a.waitForFunction(() => (document.getElementById('notice').textContent || '').startsWith('slow down'), null, { timeout: 5000 });
      await Promise.all([waitSettled(p.a, 30, 30000), waitSettled(p.b, 30, 30000)]);
      await sameAndOnce(p.a, p.b, sent);
    } finally { await p.close(); }
  });

  await tally.check('the outbox survives a reload while the server is down, then lands once', async () => {
    await startMock({});
    const p = await pair('reload');
    try {
      await post(cfg.urlA, '/mock/down');
      await p.a.waitForFunction(() => document.getElementById('status').dataset.state !== 'connected', null, { timeout: 5000 });
      await sendText(p.a, 'kept across a reload 1');
      await sendText(p.a, 'kept across a reload 2');
      await p.a.reload({ waitUntil: 'domcontentloaded' });
      must(await p.a.$$eval('#messages li[data-cid][data-state="pending"]', (e) => e.length) === 2, 'pending messages not shown after the reload');
      await post(cfg.urlA, '/mock/up');
      await waitConnected(p.a, p.room, 15000);
      await sameAndOnce(p.a, p.b, ['kept across a reload 1', 'kept across a reload 2']);
      const shown = await messages(p.a);
      must(shown[0].body === 'kept across a reload 1', 'typed order lost');
    } finally { await p.close(); }
  });

  await tally.check('no CSP violations or page errors', () => must(errors.length === 0, errors.join('; ')));
}

await test.execute(main);
