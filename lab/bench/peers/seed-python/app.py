"""Seed-design chat app (benchmark peer): Tornado WebSocket server.

The design wsmesh grew from, re-implemented faithfully for `make bench`:

    client --ws--> app --PUBLISH--> Redis --SUBSCRIBE--> subscriber.py
                    ^                                        |
                    +--------- POST /internal/events --------+   (one request per message)

- `/ws` speaks the subset of `wsmesh.v1` the load generator drives:
  welcome, empty history, send -> PUBLISH (+ ack when a cid was given).
- Nothing is delivered to sockets at publish time: every chat reaches the
  sockets of its room only when the subscriber POSTs it back, like the seed.
- One process, one thread, one Tornado IOLoop; the Redis client is the plain
  synchronous redis-py one, so PUBLISH blocks the loop for one round trip,
  exactly as the seed did.
- No history, no idempotency, no rate limits, no per-socket buffer bounds.
"""

import argparse
import asyncio
import itertools
import json
import logging
import secrets
import signal
import time

import redis
import tornado.web
import tornado.websocket

SUBPROTOCOL = "wsmesh.v1"
DEFAULT_ROOM = "lobby"

log = logging.getLogger("seed-app")


class Hub:
    """Local sockets per room, and the few facts every handler needs."""

    def __init__(self, instance, redis_client, channel):
        # Name reported in `welcome.instance`.
        self.instance = instance
        # Synchronous redis-py client used for PUBLISH.
        self.redis = redis_client
        # Pub/sub channel shared by every instance of this peer.
        self.channel = channel
        # room -> set of open ChatSocket handlers on this instance.
        self.rooms = {}
        # Source of guest nick numbers.
        self.guests = itertools.count(1)
        # Source of message ids: "<instance>-<n>", n grows per instance.
        self.seq = itertools.count(1)

    def join(self, room, sock):
        self.rooms.setdefault(room, set()).add(sock)

    def leave(self, room, sock):
        socks = self.rooms.get(room)
        if socks is not None:
            socks.discard(sock)
            if not socks:
                del self.rooms[room]

    def deliver(self, chat):
        """Write one chat to every local socket of its room."""
        socks = self.rooms.get(chat.get("room"))
        if not socks:
            return 0
        frame = json.dumps({"type": "chat", "chats": [chat]}, ensure_ascii=False)
        for sock in list(socks):
            try:
                sock.write_message(frame)
            except tornado.websocket.WebSocketClosedError:
                self.leave(chat["room"], sock)
        return len(socks)

    def close_all(self):
        for socks in list(self.rooms.values()):
            for sock in list(socks):
                sock.close(1001, "server shutting down")


def now_ms():
    return int(time.time() * 1000)


class ChatSocket(tornado.websocket.WebSocketHandler):
    """One client connection on `/ws?room=ROOM`."""

    def initialize(self, hub):
        self.hub = hub
        self.room = None

    def check_origin(self, origin):
        # Behind the benchmark lb the Host differs from the Origin; accept all.
        return True

    def select_subprotocol(self, subprotocols):
        return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None

    def open(self):
        self.room = self.get_argument("room", DEFAULT_ROOM) or DEFAULT_ROOM
        self.nick = "guest-%d" % next(self.hub.guests)
        self.hub.join(self.room, self)
        self.write_message(json.dumps({
            "type": "welcome",
            "session": secrets.token_hex(16),
            "nick": self.nick,
            "room": self.room,
            "instance": self.hub.instance,
            "connected_since": now_ms(),
        }))
        # Peers keep no history: always empty.
        self.write_message(json.dumps({"type": "history", "room": self.room, "chats": []}))

    def on_message(self, message):
        try:
            frame = json.loads(message)
        except ValueError:
            return  # bad JSON: ignore the frame
        if not isinstance(frame, dict) or frame.get("type") != "send":
            return
        body = frame.get("body")
        if not isinstance(body, str):
            return
        chat = {
            "id": "%s-%d" % (self.hub.instance, next(self.hub.seq)),
            "room": self.room,
            "nick": self.nick,
            "body": body,
            "ts": now_ms(),
        }
        try:
            self.hub.redis.publish(self.hub.channel, json.dumps(chat, ensure_ascii=False))
        except redis.RedisError as e:
            log.warning("publish failed: %s", e)
            self.write_message(json.dumps({
                "type": "error", "code": "unavailable", "message": "redis unavailable"}))
            return
        cid = frame.get("cid")
        if isinstance(cid, str):
            self.write_message(json.dumps({"type": "ack", "cid": cid, "id": chat["id"]},
                                          ensure_ascii=False))

    def on_close(self):
        if self.room is not None:
            self.hub.leave(self.room, self)


class Events(tornado.web.RequestHandler):
    """`POST /internal/events`: the subscriber hands over one published chat."""

    def initialize(self, hub):
        self.hub = hub

    def post(self):
        try:
            data = json.loads(self.request.body)
        except ValueError:
            self.set_status(400)
            return
        # The seed posts one chat per request; accept an array too.
        chats = data if isinstance(data, list) else [data]
        for chat in chats:
            if isinstance(chat, dict):
                self.hub.deliver(chat)
        self.set_status(204)


class Health(tornado.web.RequestHandler):
    def initialize(self, hub):
        self.hub = hub

    def get(self):
        self.write({"ok": True, "instance": self.hub.instance})


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="public port (/ws, /healthz)")
    p.add_argument("--internal-port", type=int, required=True,
                   help="internal port (POST /internal/events, /healthz), loopback only")
    p.add_argument("--host", default="127.0.0.1", help="public bind address")
    p.add_argument("--instance", required=True, help="name reported in welcome.instance")
    p.add_argument("--redis", default="redis://127.0.0.1:6404/0", help="Redis URL")
    p.add_argument("--channel", default="bench:seed-python:chat", help="pub/sub channel")
    p.add_argument("--access-log", action="store_true",
                   help="log every request (off by default: it would dominate a benchmark)")
    return p.parse_args()


async def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s " + args.instance + " %(levelname)s %(message)s")
    if not args.access_log:
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    hub = Hub(args.instance, redis.Redis.from_url(args.redis), args.channel)
    public = tornado.web.Application([
        (r"/ws", ChatSocket, {"hub": hub}),
        (r"/healthz", Health, {"hub": hub}),
    ])
    internal = tornado.web.Application([
        (r"/internal/events", Events, {"hub": hub}),
        (r"/healthz", Health, {"hub": hub}),
    ])
    public_server = public.listen(args.port, address=args.host)
    internal_server = internal.listen(args.internal_port, address="127.0.0.1")
    log.info("listening on %s:%d, internal 127.0.0.1:%d", args.host, args.port,
             args.internal_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down")
    public_server.stop()
    internal_server.stop()
    hub.close_all()
    await asyncio.sleep(0.1)  # let the close frames go out
    hub.redis.close()


if __name__ == "__main__":
    asyncio.run(main())
