// wsmesh chat page: speaks the `wsmesh.v1` protocol (docs/protocol.md, "Client protocol").
// One file on purpose: the page is served as a single script with no build step or module loader.
//
// What it promises the person chatting:
// - every message is shown once, in id order, whether it came in `history`, in a live
//   `chat` frame or as the `ack` of an own send;
// - an own message is kept in the outbox (also in sessionStorage, so a reload keeps it)
//   until its `ack` arrives, and re-sent with the same `cid` after every reconnect;
// - after a drop the page reconnects (exponential backoff with full jitter) and resumes
//   with `since=<last id seen>`, so nothing is missed.
// - on a server in jwt mode (docs/security.md) the page takes its token from the URL
//   fragment (`#token=…`, then removed from the address bar and kept in sessionStorage) or
//   leaves it to the `wsmesh_token` cookie; the nick is the token's. When the token expires
//   (close 4001) it asks the refresh URL the server names for a fresh one, or reloads the
//   page (a login proxy renews the cookie), and resumes with `since` as after any drop.
//
// User data only ever reaches the DOM through `textContent`.
// Test hooks (stable, for lab/browser): #status[data-state|data-instance|data-attempt|data-last-close],
// #presence[data-online], #app[data-room|data-nick|data-pending], and every message
// `li[data-id]` (confirmed) or `li[data-cid][data-state=pending|failed]` (own, not acked);
// #nick[readonly] (the nick is the token's), `window.wsmeshTest.drop()` closes the socket as a
// network loss would.
'use strict';

(() => {
  /** Protocol and limits; keep in step with the server's defaults. */
  const SUBPROTOCOL = 'wsmesh.v1';
  const MAX_BODY_BYTES = 4096;
  const MAX_NICK_CHARS = 32;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  /** Reconnect backoff: delay = random(0, min(CAP, BASE * 2^attempt)). */
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_CAP_MS = 10000;
  /** Close 4001: the socket's token expired; get a fresh one and reconnect at once. */
  const TOKEN_EXPIRED = 4001;
  /** Close 1012 (draining) / 1013 (too slow) / 4001: reconnect at once, jittered over this. */
  const QUICK_RECONNECT_MS = 500;
  /** A socket that has not said `welcome` by then is given up and retried. */
  const WELCOME_TIMEOUT_MS = 10000;
  /** If `history` does not follow `welcome` within this, flush the outbox anyway. */
  const HISTORY_WAIT_MS = 1500;
  /** An outbox entry sent this long ago without an ack is sent again (same cid). */
  const RESEND_AFTER_MS = 5000;
  /**
   * Own pacing of sends, under the server's default budget (burst 50, 20/s), so a burst
   * of messages is not refused and lands in the order it was typed.
   */
  const PACE_BURST = 40;
  const PACE_PER_SEC = 16;
  /** Messages kept per room in memory and in the DOM. */
  const KEEP_PER_ROOM = 1000;
  const STORAGE = {
    session: 'wsmesh.session',
    nick: 'wsmesh.nick',
    room: 'wsmesh.room',
    client: 'wsmesh.client',
    outbox: 'wsmesh.outbox',
    token: 'wsmesh.token',
  };
  const ERROR_TEXT = {
    rate_limited: 'slow down — sending again shortly',
    too_large: 'message too large',
    unavailable: 'server busy, will retry',
    bad_room: 'invalid room name',
    bad_since: 'could not resume, reloading history',
    bad_json: 'the server did not understand a message',
    unknown_type: 'the server did not understand a message',
    forbidden: 'your sign-in fixes the nick',
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $('app'),
    status: $('status'),
    statusLive: $('status-live'),
    retryNow: $('retry-now'),
    presence: $('presence'),
    settings: $('settings'),
    room: $('room'),
    roomHint: $('room-hint'),
    nick: $('nick'),
    list: $('messages'),
    jump: $('jump'),
    notice: $('notice'),
    composer: $('composer'),
    text: $('text'),
    send: $('send'),
    counter: $('counter'),
    tooLong: $('too-long'),
  };
  const encoder = new TextEncoder();

  // ---- small helpers -------------------------------------------------------------

  /** Storage that never throws (private mode, quota, disabled storage). */
  function store(kind) {
    const s = (() => { try { return window[kind]; } catch (_) { return null; } })();
    return {
      get(k) { try { return s ? s.getItem(k) : null; } catch (_) { return null; } },
      set(k, v) { try { if (s) s.setItem(k, v); } catch (_) { /* full or disabled */ } },
      del(k) { try { if (s) s.removeItem(k); } catch (_) { /* disabled */ } },
    };
  }
  const local = store('localStorage');
  const session = store('sessionStorage');

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** This browser's id: the prefix of every cid it makes, so own messages are known. */
  const clientId = (() => {
    let id = local.get(STORAGE.client);
    if (!id || !/^[0-9a-f]{16}$/.test(id)) {
      id = randomHex(8);
      local.set(STORAGE.client, id);
    }
    return id;
  })();
  const newCid = () => `${clientId}.${randomHex(12)}`; // 41 chars, ≤ 64

  /** A stream id "ms-seq" as a pair of numbers; null when malformed. */
  function parseId(id) {
    const m = /^(\d+)-(\d+)$/.exec(String(id));
    return m ? [Number(m[1]), Number(m[2])] : null;
  }
  function cmpId(a, b) {
    const x = parseId(a);
    const y = parseId(b);
    if (!x || !y) return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
    return x[0] - y[0] || x[1] - y[1];
  }
  const byteLength = (s) => encoder.encode(s).length;
  /** A nick the server accepts: no control characters, trimmed, 1..32 characters (code points). */
  const cleanNick = (s) => Array.from(String(s).replace(/\p{Cc}/gu, '').trim()).slice(0, MAX_NICK_CHARS).join('').trim();
  const jitter = (ceiling) => Math.random() * ceiling;
  const backoffDelay = (attempt) =>
    jitter(Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, attempt)));

  function formatTime(ts) {
    const d = new Date(ts);
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return sameDay ? time : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
  }

  // ---- state ---------------------------------------------------------------------

  /** Everything the page knows; the DOM is drawn from it. */
  const state = {
    /** Room shown and connected to. */
    room: 'lobby',
    /** Nick the server gave us in `welcome` (or the one we last asked for). */
    nick: '',
    /** Per room: { lastId, chats: sorted [chat], byId: Map id→chat, notices: [{before, text}] }. */
    rooms: new Map(),
    /** Own sends not yet acked, in send order: cid → { cid, room, body, at, sentOn, sentAt, failed }. */
    outbox: new Map(),
    /** The current socket, or null. */
    ws: null,
    /** Increments with every socket, so late events of an old one are ignored. */
    connSerial: 0,
    /** `welcome` seen on the current socket. */
    welcomed: false,
    /** `history` seen (or waited for) on the current socket: sends may go out. */
    ready: false,
    /** Consecutive failed connects; reset by a `welcome`. */
    attempt: 0,
    /** Pending reconnect: { timer, at }. */
    reconnect: null,
    /** Countdown redraw timer while reconnecting. */
    tick: null,
    /** Timers of the current socket (welcome watchdog, history wait). */
    connTimers: [],
    /** Cids sent on this socket and not yet answered, in order (errors answer the oldest). */
    inflight: [],
    /** Outbox retry after rate_limited / unavailable. */
    retryAttempt: 0,
    holdUntil: 0,
    /** After a refusal: one send at a time until the outbox is empty, to keep the order. */
    careful: false,
    /** Send pacing bucket. */
    pace: { tokens: PACE_BURST, at: Date.now() },
    flushTimer: null,
    /** Instance name from the last `welcome`. */
    instance: '',
    /** Nick of the last `welcome`: what a refused nick change falls back to. */
    welcomeNick: '',
  };

  function roomState(room) {
    let r = state.rooms.get(room);
    if (!r) {
      r = { lastId: null, chats: [], byId: new Map(), notices: [] };
      state.rooms.set(room, r);
    }
    return r;
  }

  // ---- outbox persistence --------------------------------------------------------

  function saveOutbox() {
    const items = Array.from(state.outbox.values(), (e) => ({
      cid: e.cid, room: e.room, body: e.body, at: e.at, failed: !!e.failed,
    }));
    if (items.length) session.set(STORAGE.outbox, JSON.stringify(items));
    else session.del(STORAGE.outbox);
    ui.app.dataset.pending = String(items.filter((e) => !e.failed).length);
  }

  function loadOutbox() {
    let items = [];
    try { items = JSON.parse(session.get(STORAGE.outbox) || '[]'); } catch (_) { items = []; }
    if (!Array.isArray(items)) return;
    for (const e of items) {
      if (!e || typeof e.cid !== 'string' || typeof e.body !== 'string' || !ROOM_RE.test(e.room)) continue;
      state.outbox.set(e.cid, {
        cid: e.cid, room: e.room, body: e.body, at: Number(e.at) || Date.now(),
        sentOn: -1, sentAt: 0, failed: !!e.failed,
      });
    }
    saveOutbox();
  }

  // ---- rendering -----------------------------------------------------------------

  const isOwn = (chat) => typeof chat.cid === 'string' && chat.cid.startsWith(`${clientId}.`);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** One message element. `chat` holds id (or none when pending), nick, body, ts. */
  function messageElement(chat, opts) {
    const li = el('li', 'msg');
    const meta = el('div', 'meta');
    const nick = el('span', 'nick', chat.nick);
    const time = el('time', 'time', formatTime(chat.ts));
    time.dateTime = new Date(chat.ts).toISOString();
    time.title = new Date(chat.ts).toLocaleString();
    meta.append(nick, time);
    const body = el('p', 'body', chat.body);
    li.append(meta, body);
    li.dataset.nick = chat.nick;
    if (opts.own) li.classList.add('own');
    if (chat.id) {
      li.dataset.id = chat.id;
    } else {
      li.dataset.cid = chat.cid;
      setPendingMark(li, opts.failed ? 'failed' : 'pending');
    }
    return li;
  }

  function setPendingMark(li, kind) {
    li.dataset.state = kind;
    li.classList.toggle('pending', kind === 'pending');
    li.classList.toggle('failed', kind === 'failed');
    let mark = li.querySelector('.mark');
    if (!mark) {
      mark = el('span', 'mark');
      li.querySelector('.meta').append(mark);
    }
    mark.textContent = kind === 'failed' ? 'not sent: too large' : 'sending…';
    if (kind === 'failed' && !li.querySelector('.dismiss')) {
      const b = el('button', 'link-button dismiss', 'dismiss');
      b.type = 'button';
      b.setAttribute('aria-label', 'dismiss the message that was not sent');
      li.querySelector('.meta').append(b);
    }
  }

  function noticeElement(text) {
    const li = el('li', 'sys', text);
    li.dataset.notice = 'truncated';
    return li;
  }

  const atBottom = () => ui.list.scrollHeight - ui.list.scrollTop - ui.list.clientHeight < 24;

  function scrollToBottom() {
    ui.list.scrollTop = ui.list.scrollHeight;
    ui.jump.hidden = true;
  }

  /** Run a DOM change, keeping the view pinned to the bottom only if it was there. */
  function keepScroll(change, forceBottom) {
    const stick = forceBottom || atBottom();
    change();
    if (stick) scrollToBottom();
    else if (ui.list.scrollHeight > ui.list.clientHeight) ui.jump.hidden = false;
  }

  /** Element of the first pending own message in the list, before which new confirmed ones go. */
  const firstPendingEl = () => ui.list.querySelector('li[data-cid]');

  function elementForId(id) {
    return ui.list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
  }

  /** Draw the whole list of the current room from state (on room switch). */
  function redrawRoom() {
    const r = roomState(state.room);
    const nodes = [];
    let n = 0;
    for (const c of r.chats) {
      while (n < r.notices.length && r.notices[n].before !== null && cmpId(r.notices[n].before, c.id) <= 0) {
        nodes.push(noticeElement(r.notices[n].text));
        n++;
      }
      nodes.push(messageElement(c, { own: isOwn(c) }));
    }
    for (; n < r.notices.length; n++) nodes.push(noticeElement(r.notices[n].text));
    for (const e of state.outbox.values()) {
      if (e.room !== state.room) continue;
      nodes.push(messageElement({ cid: e.cid, nick: state.nick || 'me', body: e.body, ts: e.at },
        { own: true, failed: e.failed }));
    }
    ui.list.replaceChildren(...nodes);
    scrollToBottom();
  }

  /**
   * Merge chats into a room: dedup by id, keep id order, drop the pending placeholder
   * of an own message that is now confirmed. `fromStream` chats (history/chat frames)
   * advance the room's resume point; an ack-made chat does not, since older chats of
   * others may still be on their way to us.
   */
  function mergeChats(room, chats, fromStream) {
    const r = roomState(room);
    const visible = room === state.room;
    let confirmedOwn = false;
    const work = () => {
      for (const c of chats) {
        if (!c || typeof c.id !== 'string' || !parseId(c.id)) continue;
        if (fromStream && (r.lastId === null || cmpId(c.id, r.lastId) > 0)) r.lastId = c.id;
        if (fromStream) for (const n of r.notices) if (n.before === null) n.before = c.id;
        if (c.cid && state.outbox.has(c.cid) && state.outbox.get(c.cid).room === room) {
          state.outbox.delete(c.cid);
          confirmedOwn = true;
          if (visible) {
            const p = ui.list.querySelector(`li[data-cid="${CSS.escape(c.cid)}"]`);
            if (p) p.remove();
          }
        }
        if (r.byId.has(c.id)) {
          // Seen already (e.g. made from our ack): take the server's nick if it differs.
          const known = r.byId.get(c.id);
          if (fromStream && known.provisional) {
            known.provisional = false;
            if (known.nick !== c.nick) {
              known.nick = c.nick;
              const e = visible && elementForId(c.id);
              if (e) { e.dataset.nick = c.nick; e.querySelector('.nick').textContent = c.nick; }
            }
          }
          continue;
        }
        const chat = {
          id: c.id, room, nick: String(c.nick ?? ''), body: String(c.body ?? ''),
          ts: Number(c.ts) || parseId(c.id)[0], cid: c.cid, provisional: !fromStream,
        };
        // Insert in id order (usually at the end: search from the back).
        let i = r.chats.length;
        while (i > 0 && cmpId(r.chats[i - 1].id, chat.id) > 0) i--;
        r.chats.splice(i, 0, chat);
        r.byId.set(chat.id, chat);
        if (fromStream && visible && document.hidden && !isOwn(chat)) { unread++; drawTitle(); }
        if (visible) {
          const next = r.chats[i + 1];
          const ref = next ? elementForId(next.id) : firstPendingEl();
          // A truncation notice sits right before the chat it precedes.
          let before = ref;
          if (before && before.previousElementSibling && before.previousElementSibling.dataset.notice
              && r.notices.some((n) => n.before === (next && next.id) && cmpId(chat.id, n.before) < 0)) {
            before = before.previousElementSibling;
          }
          ui.list.insertBefore(messageElement(chat, { own: isOwn(chat) }), before);
        }
      }
      // Bound memory and DOM.
      while (r.chats.length > KEEP_PER_ROOM) {
        const old = r.chats.shift();
        r.byId.delete(old.id);
        if (visible) { const e = elementForId(old.id); if (e) e.remove(); }
      }
    };
    if (visible) keepScroll(work, false); else work();
    if (confirmedOwn) saveOutbox();
  }

  function addTruncatedNotice(room, firstId) {
    const r = roomState(room);
    const text = 'older messages were skipped';
    // Notices are added in time order, so the list stays sorted; `before: null` means
    // "before the next chat to arrive" and is filled in by mergeChats.
    r.notices.push({ before: firstId || null, text });
    if (!firstId) {
      if (room === state.room) keepScroll(() => ui.list.insertBefore(noticeElement(text), firstPendingEl()), false);
      return;
    }
    if (room === state.room) {
      const ref = elementForId(firstId) || firstPendingEl();
      keepScroll(() => ui.list.insertBefore(noticeElement(text), ref), false);
    }
  }

  // ---- status line ---------------------------------------------------------------

  /** Messages from others that arrived while the tab was hidden, shown in the title. */
  let unread = 0;
  function drawTitle() {
    document.title = `${unread ? `(${unread}) ` : ''}${state.room} — wsmesh chat`;
  }

  /** state: connecting | connected | reconnecting | offline. */
  let spoken = '';
  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.dataset.attempt = String(state.attempt);
    ui.status.dataset.instance = kind === 'connected' ? state.instance : '';
    ui.status.textContent = text;
    ui.retryNow.hidden = !(kind === 'reconnecting' || kind === 'offline');
    ui.app.dataset.state = kind;
    // Screen readers hear a change of state, not every tick of the countdown.
    const say = kind === 'reconnecting' ? `reconnecting, attempt ${state.attempt}` : text;
    if (say !== spoken) { spoken = say; ui.statusLive.textContent = say; }
  }

  function setPresence(n) {
    if (n === null) {
      ui.presence.dataset.online = '';
      ui.presence.textContent = '–';
      ui.presence.hidden = true;
    } else {
      ui.presence.dataset.online = String(n);
      ui.presence.textContent = `${n} online`;
      ui.presence.hidden = false;
    }
  }

  let noticeTimer = null;
  function showNotice(text, kind) {
    ui.notice.textContent = text;
    ui.notice.dataset.kind = kind || 'info';
    ui.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { ui.notice.hidden = true; }, 4000);
  }

  function drawReconnectCountdown() {
    if (!state.reconnect) return;
    const left = Math.max(0, state.reconnect.at - Date.now()) / 1000;
    setStatus('reconnecting', `reconnecting in ${left.toFixed(1)} s… (attempt ${state.attempt})`);
  }

  // ---- connection ----------------------------------------------------------------

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ room: state.room });
    const r = roomState(state.room);
    if (r.lastId) q.set('since', r.lastId);
    const token = local.get(STORAGE.session);
    if (token) q.set('session', token);
    const auth = session.get(STORAGE.token);
    if (auth) q.set('token', auth);
    return `${proto}//${location.host}/ws?${q}`;
  }

  /** Where a fresh token comes from (`auth.refresh_url`), or '' for a reload. */
  function refreshUrl() {
    const meta = document.querySelector('meta[name="wsmesh-token-refresh"]');
    return (meta && meta.content) || '';
  }

  /**
   * After 4001: a fresh token from the refresh URL (text, or JSON `{"token":…}`, asked with
   * this browser's cookies), then reconnect; without one, reload: the cookie (renewed by the
   * site's login) carries the next token, and the outbox survives in sessionStorage.
   */
  async function renewToken() {
    const url = refreshUrl();
    if (url) {
      try {
        const resp = await fetch(url, { credentials: 'include', cache: 'no-store' });
        const text = (await resp.text()).trim();
        let token = text;
        if (text.startsWith('{')) token = String(JSON.parse(text).token || '');
        if (resp.ok && token) {
          session.set(STORAGE.token, token);
          scheduleReconnect(TOKEN_EXPIRED);
          return;
        }
      } catch (_) { /* fall through to the usual backoff */ }
      showNotice('could not renew the sign-in, retrying', 'warn');
      scheduleReconnect(null);
      return;
    }
    session.del(STORAGE.token);
    location.reload();
  }

  /** The token's nick cannot change: show it and lock the field. */
  function lockNick() {
    local.del(STORAGE.nick);
    ui.nick.readOnly = true;
    ui.nick.title = 'set by your sign-in';
  }

  function clearConnTimers() {
    for (const t of state.connTimers) clearTimeout(t);
    state.connTimers = [];
  }

  function cancelReconnect() {
    if (state.reconnect) clearTimeout(state.reconnect.timer);
    state.reconnect = null;
    clearInterval(state.tick);
    state.tick = null;
  }

  /** Drop the current socket on purpose (room switch, watchdog); its close is ignored. */
  function dropSocket(code, reason) {
    const ws = state.ws;
    state.ws = null;
    state.connSerial++;
    state.welcomed = false;
    state.ready = false;
    state.inflight = [];
    clearConnTimers();
    if (ws) { try { ws.close(code, reason); } catch (_) { /* already closing */ } }
  }

  function connect() {
    cancelReconnect();
    dropSocket(1000, 'reconnect');
    if (!location.host) { // file:// preview: nothing to connect to
      setStatus('offline', 'offline (open this page from a wsmesh server)');
      return;
    }
    if (navigator.onLine === false) {
      setStatus('offline', 'offline');
      return;
    }
    setStatus('connecting', state.attempt ? `connecting… (attempt ${state.attempt})` : 'connecting…');
    const serial = ++state.connSerial;
    let ws;
    try {
      ws = new WebSocket(wsUrl(), SUBPROTOCOL);
    } catch (_) {
      scheduleReconnect(null);
      return;
    }
    state.ws = ws;
    const mine = () => serial === state.connSerial && state.ws === ws;
    state.connTimers.push(setTimeout(() => {
      if (mine() && !state.welcomed) { dropSocket(4000, 'no welcome'); scheduleReconnect(null); }
    }, WELCOME_TIMEOUT_MS));
    ws.onmessage = (ev) => { if (mine()) onFrame(ev.data); };
    ws.onclose = (ev) => {
      if (!mine()) return;
      state.ws = null;
      state.connSerial++;
      state.welcomed = false;
      state.ready = false;
      state.inflight = [];
      clearConnTimers();
      setPresence(null);
      markOutboxUnsent();
      ui.status.dataset.lastClose = String(ev.code);
      if (ev.code === TOKEN_EXPIRED) {
        setStatus('reconnecting', 'sign-in expired, renewing…');
        renewToken();
        return;
      }
      scheduleReconnect(ev.code);
    };
    ws.onerror = () => { /* a close event follows */ };
  }

  function scheduleReconnect(code) {
    cancelReconnect();
    if (navigator.onLine === false) {
      setStatus('offline', 'offline');
      return;
    }
    let delay;
    if (code === 1012 || code === 1013 || code === TOKEN_EXPIRED) {
      delay = jitter(QUICK_RECONNECT_MS);
      if (code === 1013) showNotice('connection too slow, catching up…');
    } else {
      delay = backoffDelay(state.attempt);
    }
    state.attempt++;
    if (code === 1008) showNotice('the server refused this page (policy)', 'error');
    state.reconnect = { at: Date.now() + delay, timer: setTimeout(connect, delay) };
    drawReconnectCountdown();
    state.tick = setInterval(drawReconnectCountdown, 100);
  }

  function onFrame(data) {
    let f;
    try { f = JSON.parse(data); } catch (_) { return; }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'welcome': return onWelcome(f);
      case 'history': return onHistory(f);
      case 'chat': return mergeChats(state.room, Array.isArray(f.chats) ? f.chats : [], true);
      case 'ack': return onAck(f);
      case 'presence': if (f.room === undefined || f.room === state.room) setPresence(Number(f.online) || 0); return;
      case 'error': return onError(f);
      default: return; // newer server, unknown frame: ignore
    }
  }

  function onWelcome(f) {
    state.welcomed = true;
    state.attempt = 0;
    state.instance = String(f.instance || '');
    if (typeof f.session === 'string' && f.session) local.set(STORAGE.session, f.session);
    if (typeof f.nick === 'string') state.nick = f.nick;
    state.welcomeNick = state.nick;
    if (f.connected_since) ui.status.title = `session since ${new Date(Number(f.connected_since)).toLocaleString()}`;
    setStatus('connected', `connected to ${state.instance || 'server'}`);
    // The nick asked for in this browser wins over the session's (e.g. typed while offline).
    const wanted = local.get(STORAGE.nick);
    if (wanted && wanted !== state.nick && !ui.nick.readOnly) sendNick(wanted);
    showNick();
    // Sends wait for `history`, so a message it already holds is not sent again.
    state.connTimers.push(setTimeout(() => { if (state.welcomed && !state.ready) becomeReady(); }, HISTORY_WAIT_MS));
  }

  function onHistory(f) {
    const chats = Array.isArray(f.chats) ? f.chats : [];
    const room = state.room;
    if (f.truncated) addTruncatedNotice(room, chats.length ? chats[0].id : null);
    mergeChats(room, chats, true);
    if (!state.ready) becomeReady();
  }

  function becomeReady() {
    state.ready = true;
    flushOutbox();
  }

  function onAck(f) {
    const cid = String(f.cid || '');
    const i = state.inflight.indexOf(cid);
    if (i >= 0) state.inflight.splice(0, i + 1); // answered in order: earlier ones were errors
    state.retryAttempt = 0;
    const e = state.outbox.get(cid);
    if (!e || typeof f.id !== 'string' || !parseId(f.id)) return;
    // mergeChats removes the placeholder and the outbox entry (matched by cid).
    mergeChats(e.room, [{ id: f.id, room: e.room, nick: state.nick, body: e.body, ts: parseId(f.id)[0], cid }], false);
    if (state.outbox.has(cid)) { state.outbox.delete(cid); saveOutbox(); }
    if (state.careful) flushOutbox();
  }

  function onError(f) {
    const code = String(f.code || '');
    // The server answers a connection's frames in order: an error answers the oldest open send.
    const cid = state.inflight.shift();
    if (code === 'rate_limited' || code === 'unavailable') {
      state.careful = true;
      // One pause per refusal round: a burst answered by many errors backs off once.
      if (Date.now() >= state.holdUntil) {
        state.retryAttempt++;
        const delay = Math.max(200, backoffDelay(state.retryAttempt));
        state.holdUntil = Date.now() + delay;
        scheduleFlush(delay);
      }
      for (const e of state.outbox.values()) e.sentOn = -1; // send all unacked again after the pause
      state.inflight = [];
    } else if (code === 'too_large' && cid && state.outbox.has(cid)) {
      const e = state.outbox.get(cid);
      e.failed = true;
      saveOutbox();
      const p = ui.list.querySelector(`li[data-cid="${CSS.escape(cid)}"]`);
      if (p) setPendingMark(p, 'failed');
    } else if (code === 'bad_since') {
      roomState(state.room).lastId = null;
    } else if (code === 'forbidden') {
      lockNick();
      state.nick = state.welcomeNick;
      showNick();
    }
    showNotice(ERROR_TEXT[code] || String(f.message || code || 'error'), code === 'unavailable' || code === 'rate_limited' ? 'warn' : 'error');
  }

  // ---- outbox --------------------------------------------------------------------

  function markOutboxUnsent() {
    for (const e of state.outbox.values()) e.sentOn = -1;
  }

  function scheduleFlush(delay) {
    clearTimeout(state.flushTimer);
    state.flushTimer = setTimeout(() => { state.flushTimer = null; flushOutbox(); }, delay);
  }

  /**
   * Send what is due: never sent on this socket, or unanswered for too long; paced by
   * the local bucket, and one at a time (waiting for its ack) after a refusal.
   */
  function flushOutbox() {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !state.ready) return;
    const now = Date.now();
    if (now < state.holdUntil) { scheduleFlush(state.holdUntil - now); return; }
    const pace = state.pace;
    pace.tokens = Math.min(PACE_BURST, pace.tokens + ((now - pace.at) / 1000) * PACE_PER_SEC);
    pace.at = now;
    let waiting = false;
    let mine = 0;
    for (const e of state.outbox.values()) {
      if (e.room !== state.room || e.failed) continue;
      mine++;
      const due = e.sentOn !== state.connSerial || now - e.sentAt >= RESEND_AFTER_MS;
      if (!due) { waiting = true; continue; }
      if (state.careful && (state.inflight.length || waiting)) { waiting = true; break; }
      if (pace.tokens < 1) {
        scheduleFlush(Math.ceil(((1 - pace.tokens) / PACE_PER_SEC) * 1000));
        return;
      }
      ws.send(JSON.stringify({ type: 'send', body: e.body, cid: e.cid }));
      pace.tokens -= 1;
      e.sentOn = state.connSerial;
      e.sentAt = now;
      state.inflight.push(e.cid);
      waiting = true;
    }
    if (!mine) state.careful = false;
    if (waiting) scheduleFlush(RESEND_AFTER_MS + 50);
  }

  function submitMessage() {
    const body = ui.text.value;
    if (!body.trim() || byteLength(body) > MAX_BODY_BYTES) return;
    const e = { cid: newCid(), room: state.room, body, at: Date.now(), sentOn: -1, sentAt: 0, failed: false };
    state.outbox.set(e.cid, e);
    saveOutbox();
    keepScroll(() => {
      ui.list.append(messageElement({ cid: e.cid, nick: state.nick || 'me', body, ts: e.at }, { own: true }));
    }, true);
    ui.text.value = '';
    updateComposer();
    flushOutbox();
  }

  // ---- nick and room -------------------------------------------------------------

  function showNick() {
    ui.app.dataset.nick = state.nick;
    if (document.activeElement !== ui.nick) ui.nick.value = state.nick;
  }

  function sendNick(nick) {
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN && state.welcomed) {
      ws.send(JSON.stringify({ type: 'nick', nick }));
      state.nick = nick;
      showNick();
    }
  }

  function applyNick() {
    const nick = cleanNick(ui.nick.value);
    if (!nick || nick === state.nick) { ui.nick.value = state.nick; return; }
    local.set(STORAGE.nick, nick);
    sendNick(nick);
  }

  function applyRoom() {
    const room = ui.room.value.trim();
    if (!ROOM_RE.test(room)) {
      ui.roomHint.hidden = false;
      ui.room.setAttribute('aria-invalid', 'true');
      return;
    }
    ui.roomHint.hidden = true;
    ui.room.removeAttribute('aria-invalid');
    if (room === state.room) return;
    switchRoom(room);
  }

  function switchRoom(room) {
    state.room = room;
    ui.room.value = room;
    ui.app.dataset.room = room;
    local.set(STORAGE.room, room);
    const url = new URL(location.href);
    url.searchParams.set('room', room);
    try { history.replaceState(null, '', url); } catch (_) { /* file:// */ }
    drawTitle();
    setPresence(null);
    redrawRoom();
    state.attempt = 0;
    connect();
  }

  // ---- composer ------------------------------------------------------------------

  function updateComposer() {
    const n = byteLength(ui.text.value);
    const over = n > MAX_BODY_BYTES;
    ui.counter.textContent = `${n} / ${MAX_BODY_BYTES} bytes`;
    ui.counter.classList.toggle('over', over);
    ui.counter.classList.toggle('near', !over && n > MAX_BODY_BYTES * 0.9);
    ui.tooLong.hidden = !over;
    ui.tooLong.textContent = over ? `Too long to send: ${n - MAX_BODY_BYTES} bytes over the limit.` : '';
    ui.text.setAttribute('aria-invalid', over ? 'true' : 'false');
    ui.send.disabled = over || !ui.text.value.trim();
    // Grow the box with its content, up to the CSS max-height.
    ui.text.rows = Math.min(8, Math.max(1, ui.text.value.split('\n').length));
  }

  // ---- wiring --------------------------------------------------------------------

  ui.composer.addEventListener('submit', (ev) => { ev.preventDefault(); submitMessage(); });
  ui.text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submitMessage();
    }
  });
  ui.text.addEventListener('input', updateComposer);
  ui.settings.addEventListener('submit', (ev) => { ev.preventDefault(); applyRoom(); applyNick(); });
  ui.room.addEventListener('change', applyRoom);
  ui.nick.addEventListener('change', applyNick);
  ui.nick.addEventListener('blur', () => { if (!ui.nick.value.trim()) ui.nick.value = state.nick; });
  ui.retryNow.addEventListener('click', () => { state.attempt = 0; connect(); });
  // For automation: behave as if the network dropped the socket (the page then
  // reconnects and resumes like after any other loss).
  window.wsmeshTest = Object.freeze({
    drop() { if (state.ws) state.ws.close(4000, 'test drop'); },
  });
  ui.list.addEventListener('scroll', () => { if (atBottom()) ui.jump.hidden = true; });
  ui.jump.addEventListener('click', scrollToBottom);
  ui.list.addEventListener('click', (ev) => {
    const b = ev.target.closest && ev.target.closest('button.dismiss');
    const li = b && b.closest('li[data-cid]');
    if (!li) return;
    state.outbox.delete(li.dataset.cid);
    saveOutbox();
    li.remove();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && unread) { unread = 0; drawTitle(); }
  });
  window.addEventListener('online', () => { if (!state.ws) { state.attempt = 0; connect(); } });
  window.addEventListener('offline', () => {
    if (!state.ws) { cancelReconnect(); setStatus('offline', 'offline'); }
  });

  // ---- start ---------------------------------------------------------------------

  (function start() {
    // A token in the fragment is kept for this tab and taken out of the address bar
    // (and so out of bookmarks, history and screenshots).
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get('token');
    if (token) {
      session.set(STORAGE.token, token);
      fragment.delete('token');
      const url = new URL(location.href);
      url.hash = fragment.toString();
      try { history.replaceState(null, '', url); } catch (_) { /* file:// */ }
    }
    if (session.get(STORAGE.token)) lockNick();
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get('room');
    const saved = local.get(STORAGE.room);
    const room = [fromUrl, saved, 'lobby'].find((r) => r && ROOM_RE.test(r));
    const nick = params.get('nick');
    if (nick && cleanNick(nick)) local.set(STORAGE.nick, cleanNick(nick));
    state.nick = local.get(STORAGE.nick) || '';
    loadOutbox();
    updateComposer();
    switchRoom(room);
  })();
})();
