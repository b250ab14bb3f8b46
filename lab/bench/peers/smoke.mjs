// Smoke test for a benchmark peer: connects clients to every given instance
// in one room, sends N messages and checks that every client gets every
// message exactly once with the body intact, over the `wsmesh.v1`
// subprotocol. Also: welcome/history frames, acks, /healthz, bad JSON is
// ignored, and a client in another room gets nothing.
//
//   node smoke.mjs --url ws://127.0.0.1:19501/ws --url ws://127.0.0.1:19502/ws \
//                  [--clients 6] [--messages 40] [--room NAME] [--timeout 15]
//
// Prints failures, then `N passed, M failed`; exits 1 on any failure.
// Uses the `ws` package installed in ./node (run install.sh first).

import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const require = createRequire(new URL('./node/package.json', import.meta.url));
const WebSocket = require('ws');

const SUBPROTOCOL = 'wsmesh.v1';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string', multiple: true },
    clients: { type: 'string', default: '6' },
    messages: { type: 'string', default: '40' },
    room: { type: 'string' },
    timeout: { type: 'string', default: '15' },
  },
});
const urls = opt.url ?? [];
if (urls.length === 0) {
  console.error('usage: node smoke.mjs --url ws://HOST:PORT/ws [--url …] [--clients N] [--messages N] [--room R] [--timeout S]');
  process.exit(2);
}
const nClients = Math.max(Number(opt.clients), urls.length);
const nMessages = Number(opt.messages);
const timeoutMs = Number(opt.timeout) * 1000;
const room = opt.room ?? `smoke-${crypto.randomBytes(4).toString('hex')}`;
const otherRoom = `${room}-other`;
const deadline = Date.now() + timeoutMs;

let passed = 0;
let failed = 0;
const failures = [];
function check(ok, what) {
  if (ok) passed++;
  else {
    failed++;
    failures.push(what);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms) {
  const end = Math.min(Date.now() + ms, deadline);
  while (!cond() && Date.now() < end) await sleep(10);
  return cond();
}

/** One test client: records every frame it gets. */
function connect(url, roomName, label) {
  const u = new URL(url);
  u.searchParams.set('room', roomName);
  const ws = new WebSocket(u.toString(), [SUBPROTOCOL]);
  const c = { label, url, ws, frames: [], open: false, error: null, closed: false };
  ws.on('open', () => { c.open = true; });
  ws.on('error', (e) => { c.error = e.message; });
  ws.on('close', () => { c.closed = true; });
  ws.on('message', (data) => {
    try {
      c.frames.push(JSON.parse(data.toString()));
    } catch {
      c.frames.push({ type: '<bad json from server>', raw: data.toString() });
    }
  });
  return c;
}

function bodyFor(i) {
  // Quotes, backslash, slash, non-ASCII, astral, control chars and U+2028:
  // every byte must come back as sent. Timestamp inside, like the load generator.
  return `{"t":${Date.now()},"i":${i}} smoke "q" \\ / ü 😀 \t\n<>&\u2028 ${crypto.randomBytes(3).toString('hex')}`;
}

async function main() {
  // /healthz on every instance
  for (const url of urls) {
    const h = new URL(url);
    h.protocol = h.protocol === 'wss:' ? 'https:' : 'http:';
    h.pathname = '/healthz';
    h.search = '';
    let status = 0;
    try {
      status = (await fetch(h, { signal: AbortSignal.timeout(3000) })).status;
    } catch (e) {
      status = `error ${e.message}`;
    }
    check(status === 200, `GET ${h} -> ${status}, want 200`);
  }

  const clients = [];
  for (let i = 0; i < nClients; i++) {
    clients.push(connect(urls[i % urls.length], room, `client${i}@${urls[i % urls.length]}`));
  }
  const others = urls.map((url, i) => connect(url, otherRoom, `other${i}@${url}`));
  const all = [...clients, ...others];

  await until(() => all.every((c) => (c.open && c.frames.length >= 2) || c.error || c.closed), 5000);

  const instances = new Set();
  for (const c of all) {
    check(c.open && !c.error, `${c.label}: connect: ${c.error ?? 'not open'}`);
    check(c.ws.protocol === SUBPROTOCOL, `${c.label}: subprotocol ${JSON.stringify(c.ws.protocol)}, want ${SUBPROTOCOL}`);
    const [w, h] = c.frames;
    const want = c.label.startsWith('other') ? otherRoom : room;
    const welcomeOk = w && w.type === 'welcome' && typeof w.session === 'string' && w.session.length > 0
      && typeof w.nick === 'string' && w.room === want && typeof w.instance === 'string'
      && w.instance.length > 0 && Number.isInteger(w.connected_since);
    check(welcomeOk, `${c.label}: first frame ${JSON.stringify(w)}, want a welcome for room ${want}`);
    if (welcomeOk) {
      c.nick = w.nick;
      instances.add(w.instance);
    }
    check(h && h.type === 'history' && h.room === want && Array.isArray(h.chats) && h.chats.length === 0,
      `${c.label}: second frame ${JSON.stringify(h)}, want an empty history`);
  }
  check(instances.size === urls.length, `saw instances ${[...instances]}, want ${urls.length} distinct`);

  // Bad frames must be ignored, not crash the instance or close the socket.
  for (const c of clients.slice(0, urls.length)) {
    c.ws.send('{not json');
    c.ws.send('[1,2');
    c.ws.send(JSON.stringify({ type: 'bogus' }));
    c.ws.send(JSON.stringify({ type: 'send' }));
  }

  // Send: rotate the senders over all clients (so every instance publishes).
  const sent = [];
  for (let i = 0; i < nMessages; i++) {
    const sender = clients[i % clients.length];
    const m = { i, body: bodyFor(i), cid: `smoke-${i}-${crypto.randomBytes(4).toString('hex')}`, sender };
    sent.push(m);
    if (sender.ws.readyState === WebSocket.OPEN) {
      sender.ws.send(JSON.stringify({ type: 'send', body: m.body, cid: m.cid }));
    }
    await sleep(5);
  }
  const byBody = new Map(sent.map((m) => [m.body, m]));
  const chatsOf = (c) => c.frames.filter((f) => f.type === 'chat').flatMap((f) => f.chats ?? []);
  await until(() => clients.every((c) => chatsOf(c).length >= nMessages), timeoutMs);
  await sleep(500); // a quiet period, so duplicates have a chance to show up

  // Every client: every message exactly once, body intact, same id everywhere.
  for (const c of clients) {
    const counts = new Map();
    const chats = chatsOf(c);
    for (const chat of chats) {
      const m = byBody.get(chat.body);
      if (!m) {
        check(false, `${c.label}: unexpected chat ${JSON.stringify(chat)}`);
        continue;
      }
      counts.set(m.i, (counts.get(m.i) ?? 0) + 1);
      const shapeOk = typeof chat.id === 'string' && chat.room === room && typeof chat.nick === 'string'
        && Number.isInteger(chat.ts) && (m.id === undefined || m.id === chat.id);
      if (m.id === undefined) m.id = chat.id;
      if (!shapeOk) check(false, `${c.label}: bad chat for message ${m.i}: ${JSON.stringify(chat)} (id seen before: ${m.id})`);
      if (c === m.sender && chat.nick !== c.nick) check(false, `${c.label}: own message ${m.i} has nick ${chat.nick}, want ${c.nick}`);
    }
    for (const m of sent) {
      const n = counts.get(m.i) ?? 0;
      check(n === 1, `${c.label}: message ${m.i} received ${n} times, want exactly once`);
    }
    check(c.ws.readyState === WebSocket.OPEN, `${c.label}: socket not open at the end`);
  }

  // Acks: one per cid, to the sender, with the id the chat carried.
  for (const m of sent) {
    const acks = m.sender.frames.filter((f) => f.type === 'ack' && f.cid === m.cid);
    check(acks.length === 1 && acks[0].id === m.id,
      `${m.sender.label}: ack for message ${m.i}: ${JSON.stringify(acks)}, want one with id ${m.id}`);
  }
  const ids = new Set(sent.map((m) => m.id));
  check(ids.size === sent.length, `ids not unique: ${ids.size} distinct for ${sent.length} messages`);

  // Room isolation: the other room heard nothing.
  for (const c of others) {
    const n = chatsOf(c).length;
    check(n === 0, `${c.label}: got ${n} chats from another room, want 0`);
  }

  for (const c of all) c.ws.terminate();
}

const hard = setTimeout(() => {
  console.error(`smoke: hard timeout after ${timeoutMs + 10000} ms`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, timeoutMs + 10000);

try {
  await main();
} catch (e) {
  check(false, `smoke crashed: ${e.stack ?? e}`);
}
clearTimeout(hard);
for (const f of failures.slice(0, 30)) console.log(`FAIL ${f}`);
if (failures.length > 30) console.log(`FAIL … and ${failures.length - 30} more`);
console.log(`smoke: room ${room}, ${urls.length} instances, ${nClients} clients, ${nMessages} messages`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
