// A stand-in for two wsmesh app instances, in one Node process with shared memory,
// speaking just enough `wsmesh.v1` (docs/protocol.md, "Client protocol") to exercise the
// chat page and the browser tests without Redis or the Rust binaries.
//
//   node lab/browser/mock_server.mjs            # app1 on 127.0.0.1:19031, app2 on :19032
//   MOCK_PORTS=19031,19032 MOCK_ECHO_DELAY_MS=300 node lab/browser/mock_server.mjs
//
// Faults, for the page's edge cases:
//   MOCK_ECHO_DELAY_MS  delay live `chat` fan-out (the `ack` goes first), default 0
//   MOCK_ACK_DELAY_MS   delay `ack` (the `chat` goes first), default 0
//   MOCK_MAXLEN         messages kept per room (older `since` gets `truncated:true`), default 10000
//   MOCK_MAX_BODY       body limit in bytes (too_large above), default 4096
//   MOCK_RATE_BURST / MOCK_RATE_PER_SEC   per-connection send budget (50, 20/s) → rate_limited
//   POST /mock/drop?code=1012   closes every socket of that instance with the code
//   POST /mock/down             this instance refuses connections until POST /mock/up
// Serves the page from app/src/page/ with the same CSP the app sends. Loopback only.
import { createServer } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pageDir = join(here, '..', '..', 'app', 'src', 'page');
const ports = (process.env.MOCK_PORTS || '19031,19032').split(',').map(Number);
const echoDelay = Number(process.env.MOCK_ECHO_DELAY_MS || 0);
const maxlen = Number(process.env.MOCK_MAXLEN || 10000);
const maxBody = Number(process.env.MOCK_MAX_BODY || 4096);
const rateBurst = Number(process.env.MOCK_RATE_BURST || 50);
const ratePerSec = Number(process.env.MOCK_RATE_PER_SEC || 20);
const ackDelay = Number(process.env.MOCK_ACK_DELAY_MS || 0);
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** room → { chats: [chat], lastMs, seq, cids: Map cid→id } */
const rooms = new Map();
/** token → { nick, since } */
const sessions = new Map();
/** All open sockets: { inst, room, send(obj), close(code) } */
const conns = new Set();

function room(name) {
  let r = rooms.get(name);
  if (!r) { r = { chats: [], lastMs: 0, seq: 0, cids: new Map(), trimmed: null }; rooms.set(name, r); }
  return r;
}
const cmpId = (a, b) => {
  const [am, as] = a.split('-').map(Number); const [bm, bs] = b.split('-').map(Number);
  return am - bm || as - bs;
};
function presence(name) {
  const n = [...conns].filter((c) => c.room === name).length;
  for (const c of conns) if (c.room === name) c.send({ type: 'presence', room: name, online: n });
}

function wsFrame(data, opcode = 1) {
  const payload = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len])
    : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 255])
      : (() => { const b = Buffer.alloc(10); b[0] = 0x80 | opcode; b[1] = 127; b.writeBigUInt64BE(BigInt(len), 2); return b; })();
  return Buffer.concat([head, payload]);
}

function serve(port, inst) {
  let down = false;
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'POST' && url.pathname === '/mock/drop') {
      const code = Number(url.searchParams.get('code') || 1012);
      let n = 0;
      for (const c of [...conns]) if (c.inst === inst) { c.close(code); n++; }
      res.end(`dropped ${n}\n`);
      return;
    }
    if (req.method === 'POST' && (url.pathname === '/mock/down' || url.pathname === '/mock/up')) {
      down = url.pathname === '/mock/down';
      if (down) for (const c of [...conns]) if (c.inst === inst) c.kill();
      res.end(down ? 'down\n' : 'up\n');
      return;
    }
    const files = { '/': ['index.html', 'text/html; charset=utf-8'], '/chat.js': ['chat.js', 'text/javascript; charset=utf-8'], '/chat.css': ['chat.css', 'text/css; charset=utf-8'] };
    const f = files[url.pathname];
    if (!f) { res.writeHead(404); res.end('not found\n'); return; }
    res.writeHead(200, { 'content-type': f[1], 'content-security-policy': CSP, 'cache-control': 'no-store' });
    res.end(readFileSync(join(pageDir, f[0])));
  });

  server.on('upgrade', (req, sock) => {
    const url = new URL(req.url, 'http://x');
    if (down || url.pathname !== '/ws') { sock.destroy(); return; }
    const protos = String(req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
    const accept = createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    sock.write(['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade',
      `Sec-WebSocket-Accept: ${accept}`, ...(protos.includes('wsmesh.v1') ? ['Sec-WebSocket-Protocol: wsmesh.v1'] : []), '', ''].join('\r\n'));
    const name = url.searchParams.get('room') || 'lobby';
    let token = url.searchParams.get('session');
    if (!token || !sessions.has(token)) {
      token = randomBytes(16).toString('hex');
      sessions.set(token, { nick: `guest-${token.slice(0, 4)}`, since: Date.now() });
    }
    const sess = sessions.get(token);
    const c = {
      inst, room: name, open: true,
      send(obj) { if (this.open) sock.write(wsFrame(JSON.stringify(obj))); },
      close(code) {
        if (!this.open) return;
        this.open = false;
        sock.end(wsFrame(Buffer.from([code >> 8, code & 255]), 8));
        conns.delete(this); presence(name);
      },
      kill() { sock.destroy(); },
    };
    conns.add(c);
    c.send({ type: 'welcome', session: token, nick: sess.nick, room: name, instance: inst, connected_since: sess.since });
    const r = room(name);
    const since = url.searchParams.get('since');
    const chats = since ? r.chats.filter((x) => cmpId(x.id, since) > 0) : r.chats.slice(-50);
    const truncated = !!(since && r.trimmed && cmpId(since, r.trimmed) < 0);
    c.send({ type: 'history', room: name, chats, ...(truncated ? { truncated } : {}) });
    presence(name);

    let tokens = rateBurst;
    let refilled = Date.now();
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 15; let len = buf[1] & 127; let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + 4 + len) return;
        const mask = buf.subarray(off, off + 4);
        const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
        for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
        buf = buf.subarray(off + 4 + len);
        if (op === 8) { c.close(1000); return; }
        if (op === 9) { sock.write(wsFrame(data, 10)); continue; }
        if (op === 1) onText(data.toString('utf8'));
      }
    });
    sock.on('close', () => { if (c.open) { c.open = false; conns.delete(c); presence(name); } });
    sock.on('error', () => {});

    function onText(text) {
      let f; try { f = JSON.parse(text); } catch (_) { c.send({ type: 'error', code: 'bad_json', message: 'not JSON' }); return; }
      if (f.type === 'nick') { sess.nick = String(f.nick).slice(0, 32); return; }
      if (f.type !== 'send') { c.send({ type: 'error', code: 'unknown_type', message: 'unknown type' }); return; }
      const now = Date.now();
      tokens = Math.min(rateBurst, tokens + ((now - refilled) / 1000) * ratePerSec);
      refilled = now;
      if (tokens < 1) { c.send({ type: 'error', code: 'rate_limited', message: 'slow down' }); return; }
      tokens -= 1;
      const body = String(f.body ?? '');
      if (Buffer.byteLength(body) > maxBody) { c.send({ type: 'error', code: 'too_large', message: `body over ${maxBody} bytes` }); return; }
      const cid = typeof f.cid === 'string' ? f.cid : undefined;
      if (cid && r.cids.has(cid)) { c.send({ type: 'ack', cid, id: r.cids.get(cid) }); return; }
      const ms = Math.max(Date.now(), r.lastMs);
      r.seq = ms === r.lastMs ? r.seq + 1 : 0; r.lastMs = ms;
      const chat = { id: `${ms}-${r.seq}`, room: name, nick: sess.nick, body, ts: ms, ...(cid ? { cid } : {}) };
      r.chats.push(chat);
      while (r.chats.length > maxlen) r.trimmed = r.chats.shift().id;
      if (cid) r.cids.set(cid, chat.id);
      const fan = () => { for (const o of conns) if (o.room === name) o.send({ type: 'chat', chats: [chat] }); };
      const ack = () => { if (cid) c.send({ type: 'ack', cid, id: chat.id }); };
      if (ackDelay) { fan(); setTimeout(ack, ackDelay); } else if (echoDelay) { ack(); setTimeout(fan, echoDelay); } else { ack(); fan(); }
    }
  });
  server.listen(port, '127.0.0.1', () => console.log(`mock ${inst} listening on http://127.0.0.1:${port}/`));
  return server;
}

const servers = ports.map((p, i) => serve(p, `app${i + 1}`));
const stop = () => { for (const c of [...conns]) c.close(1001); for (const s of servers) s.close(); setTimeout(() => process.exit(0), 200).unref(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
