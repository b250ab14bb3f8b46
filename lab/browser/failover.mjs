// Failover in a real browser: the instance page A is connected to is killed; A keeps
// chatting (its messages wait in the outbox, greyed), reconnects, and both pages end with
// the same log, each message once.
//
//   WSMESH_URL_A=https://127.0.0.1:8443/ WSMESH_URL_B=https://127.0.0.1:8443/ WSMESH_CA_FILE=certs/dev-ca.pem \
//   WSMESH_KILL_CMD_APP1='kill -9 $(cat /tmp/pids/app1.pid)' WSMESH_KILL_CMD_APP2='kill -9 $(cat /tmp/pids/app2.pid)' \
//   WSMESH_RESTART_CMD_APP1='...' WSMESH_RESTART_CMD_APP2='...' node lab/browser/failover.mjs
//
// (pid files from `lab up --pid-dir /tmp/pids`; `run.sh cluster` does exactly this.)
//
// WSMESH_KILL_CMD_<INSTANCE> (instance name from `welcome`, upper-cased, other characters
// as `_`) is run with `sh -c` once A is connected to that instance. Behind the lb, A
// reconnects to the other instance. Without an lb (A's URL is the instance itself) give
// WSMESH_RESTART_CMD_<INSTANCE> too: it runs WSMESH_RESTART_AFTER_MS (default 2000) after
// the kill and A reconnects to the restarted instance. Commands are bounded to 20 s each.
// Last line `N passed, M failed`; exit 1 on any failure; whole run bounded by
// WSMESH_TEST_TIMEOUT_MS (default 90 s here).
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import {
  Run, Tally, assertSameLog, launch, messages, must, openPage, sendText, setNick,
  settings, sleep, uniqueRoom, waitConnected, waitSettled, withRoom,
} from './lib.mjs';

if (!process.env.WSMESH_TEST_TIMEOUT_MS) process.env.WSMESH_TEST_TIMEOUT_MS = '90000';
const cfg = settings();
const tally = new Tally();
const errors = [];
const envKey = (inst) => inst.toUpperCase().replace(/[^A-Z0-9]/g, '_');

function sh(cmd) {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', cmd], { timeout: 20000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`\`${cmd}\` failed: ${err.message.split('\n')[0]} ${stderr}`.trim()));
      else resolve(stdout);
    });
  });
}

const test = new Run(cfg, tally, 'failover');

/** Records every value #status[data-state] takes, with its text, into window.__states. */
async function recordStates(page) {
  await page.evaluate(() => {
    const s = document.getElementById('status');
    window.__states = [];
    window.__closes = [];
    new MutationObserver(() => {
      const code = s.dataset.lastClose;
      if (code && window.__closes[window.__closes.length - 1] !== code) window.__closes.push(code);
      const last = window.__states[window.__states.length - 1];
      if (!last || last.state !== s.dataset.state) window.__states.push({ state: s.dataset.state, text: s.textContent });
    }).observe(s, { attributes: true, childList: true, characterData: true, subtree: true });
  });
}

async function main() {
  test.browser = await launch(cfg);
  const room = uniqueRoom('failover');
  const run = room.split('-').pop();
  console.log(`# room ${room}; A ${cfg.urlA}; B ${cfg.urlB}`);
  const a = await openPage(test.browser, cfg, 'A', errors);
  const b = await openPage(test.browser, cfg, 'B', errors);
  test.pages = { A: a, B: b };

  await a.goto(withRoom(cfg.urlA, room), { waitUntil: 'domcontentloaded' });
  await b.goto(withRoom(cfg.urlB, room), { waitUntil: 'domcontentloaded' });
  const instA = await waitConnected(a, room);
  const instB = await waitConnected(b, room);
  await setNick(a, `ann-${run}`);
  await setNick(b, `ben-${run}`);
  console.log(`# A on ${instA}, B on ${instB}`);

  const sent = [];
  const say = async (p, text) => { await sendText(p, text); sent.push(text); };
  for (let i = 1; i <= 3; i++) { await say(a, `A before ${i}`); await say(b, `B before ${i}`); }
  await tally.check('both pages settle before the fault', async () => {
    await Promise.all([waitSettled(a, sent.length), waitSettled(b, sent.length)]);
    assertSameLog(await messages(a), await messages(b));
  });

  const kill = process.env[`WSMESH_KILL_CMD_${envKey(instA)}`];
  const restart = process.env[`WSMESH_RESTART_CMD_${envKey(instA)}`];
  if (!kill) {
    tally.fail('kill the instance A is on', `WSMESH_KILL_CMD_${envKey(instA)} is not set`);
    return;
  }
  await recordStates(a);
  await tally.check(`kill ${instA} (A's instance): ${kill}`, () => sh(kill));

  await tally.check('A shows the connection loss (status leaves "connected")', async () => {
    await a.waitForFunction(() => document.getElementById('status').dataset.state !== 'connected', null, { timeout: 15000 });
  });
  // A keeps chatting while it is away: these wait in its outbox.
  for (let i = 1; i <= 3; i++) { await say(a, `A during ${i}`); await say(b, `B during ${i}`); }
  const pendingSeen = await a.$$eval('#messages li[data-cid]', (e) => e.length);
  console.log(`# A had ${pendingSeen} pending message(s) while away`);
  const away = join(cfg.shots, 'failover-A-away.png');
  await a.screenshot({ path: away, timeout: 5000 }).then(() => console.log(`# screenshot ${away}`), () => {});
  let restarted = null;
  if (restart) restarted = sleep(Number(process.env.WSMESH_RESTART_AFTER_MS || 2000)).then(() => sh(restart));

  let instA2 = '';
  await tally.check('A reconnects by itself', async () => {
    instA2 = await waitConnected(a, room, 30000);
    console.log(`# A reconnected to ${instA2}`);
  });
  if (restarted) await tally.check(`restart ${instA}: ${restart}`, () => restarted);
  else {
    await tally.check(`without a restart A lands on another instance than ${instA} (through the lb)`,
      () => must(instA2 && instA2 !== instA, `A is on ${instA2}`));
  }
  await tally.check('A said "reconnecting in N s… (attempt k)" on the way', async () => {
    const states = await a.evaluate(() => window.__states);
    const closes = await a.evaluate(() => window.__closes);
    console.log(`# A states: ${states.map((s) => s.state).join(' → ')}; close codes seen: ${closes.join(', ')}`);
    const r = states.find((s) => s.state === 'reconnecting');
    must(r, 'never in state reconnecting');
    must(/^reconnecting in \d+\.\d s… \(attempt \d+\)$/.test(r.text), `text ${JSON.stringify(r.text)}`);
  });
  for (let i = 1; i <= 2; i++) { await say(a, `A after ${i}`); await say(b, `B after ${i}`); }

  await tally.check(`both pages settle with all ${sent.length} messages, none pending`, async () => {
    await Promise.all([waitSettled(a, sent.length, 30000), waitSettled(b, sent.length, 30000)]);
  });
  const la = await messages(a);
  const lb = await messages(b);
  await tally.check('A and B show the identical ordered log', () => assertSameLog(la, lb));
  await tally.check('every message exactly once', () => {
    must(la.length === sent.length, `${la.length} shown, ${sent.length} sent`);
    for (const t of sent) must(la.filter((m) => m.body === t).length === 1, `${JSON.stringify(t)} not shown exactly once`);
  });
  await test.screenshots();
  await tally.check('no CSP violations or page errors', () => must(errors.length === 0, errors.join('; ')));
}

await test.execute(main);
