// Benchmark peer for `make bench`: the Node.js chat server users most often
// write instead of wsmesh. One process per instance: `ws` for the sockets,
// `ioredis` for pub/sub. Each `send` is PUBLISHed; the same process is
// SUBSCRIBEd to the channel and writes every chat to its local sockets of
// that room (the sender's own message comes back through Redis too).
//
// Speaks the subset of `wsmesh.v1` the load generator drives: welcome, empty
// history (no persistence), send -> chat (+ ack when a cid was given),
// GET /healthz. No idempotency, no rate limits, no per-socket buffer bounds.
//
//   node server.mjs --port 19521 --instance node1 --redis redis://127.0.0.1:6404/0

import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import { Redis } from 'ioredis';
import { WebSocketServer, WebSocket } from 'ws';

const SUBPROTOCOL = 'wsmesh.v1';
const DEFAULT_ROOM = 'lobby';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    instance: { type: 'string' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6404/0' },
    channel: { type: 'string', default: 'bench:node:chat' },
  },
});
if (!args.port || !args.instance) {
  console.error('usage: node server.mjs --port PORT --instance NAME [--host ADDR] [--redis URL] [--channel NAME]');
  process.exit(2);
}

const log = (...a) => console.log(new Date().toISOString(), args.instance, ...a);

/** room -> Set of open sockets on this instance */
const rooms = new Map();
let guests = 0;
let seq = 0;

const pub = new Redis(args.redis);
const sub = new Redis(args.redis);
pub.on('error', (e) => log('redis (pub):', e.message));
sub.on('error', (e) => log('redis (sub):', e.message));

await sub.subscribe(args.channel);
sub.on('message', (_channel, message) => {
  let chat;
  try {
    chat = JSON.parse(message);
  } catch {
    return;
  }
  const socks = rooms.get(chat.room);
  if (!socks) return;
  const frame = JSON.stringify({ type: 'chat', chats: [chat] });
  for (const ws of socks) {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame);
  }
});

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.split('?')[0] === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, instance: args.instance }));
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

const wss = new WebSocketServer({
  server,
  path: '/ws',
  handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
});

wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://localhost');
  const room = url.searchParams.get('room') || DEFAULT_ROOM;
  const nick = `guest-${++guests}`;
  if (!rooms.has(room)) rooms.set(room, new Set());
  rooms.get(room).add(ws);

  ws.send(JSON.stringify({
    type: 'welcome',
    session: crypto.randomBytes(16).toString('hex'),
    nick,
    room,
    instance: args.instance,
    connected_since: Date.now(),
  }));
  // No persistence: history is always empty.
  ws.send(JSON.stringify({ type: 'history', room, chats: [] }));

  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      return; // bad JSON: ignore the frame
    }
    if (!frame || frame.type !== 'send' || typeof frame.body !== 'string') return;
    const chat = {
      id: `${args.instance}-${++seq}`,
      room,
      nick,
      body: frame.body,
      ts: Date.now(),
    };
    pub.publish(args.channel, JSON.stringify(chat)).then(
      () => {
        if (typeof frame.cid === 'string' && ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: 'ack', cid: frame.cid, id: chat.id }));
        }
      },
      (e) => {
        log('publish failed:', e.message);
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: 'error', code: 'unavailable', message: 'redis unavailable' }));
        }
      },
    );
  });

  ws.on('error', () => {});
  ws.on('close', () => {
    const socks = rooms.get(room);
    if (!socks) return;
    socks.delete(ws);
    if (socks.size === 0) rooms.delete(room);
  });
});

server.listen(Number(args.port), args.host, () => {
  log(`listening on ${args.host}:${args.port}, channel ${args.channel}`);
});

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  log('shutting down');
  setTimeout(() => process.exit(0), 2000).unref();
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  wss.close();
  server.close();
  await Promise.allSettled([sub.quit(), pub.quit()]);
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
