"""Seed-design subscriber (benchmark peer): Redis pub/sub -> HTTP POST to its app.

One process per app instance, as in the seed: SUBSCRIBE to the chat channel
and POST every message, one HTTP request each, to the app's
`/internal/events`. No batching, no keep-alive (a plain urllib request per
message), no retries, no gap fill: what is missed while Redis or the app is
away is lost, as it was in the seed.
"""

import argparse
import logging
import signal
import time
import urllib.error
import urllib.request

import redis

log = logging.getLogger("seed-subscriber")


class Stop:
    """Remembers that SIGTERM/SIGINT arrived."""

    def __init__(self):
        # Set by the signal handler; the main loop checks it between messages.
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


def post(url, data, timeout):
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


def run(args, stop):
    url = args.app.rstrip("/") + "/internal/events"
    client = redis.Redis.from_url(args.redis)
    pubsub = None
    while not stop.requested:
        try:
            if pubsub is None:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(args.channel)
                log.info("subscribed to %s, forwarding to %s", args.channel, url)
            msg = pubsub.get_message(timeout=1.0)
        except redis.RedisError as e:
            log.warning("redis: %s; resubscribing in 1s", e)
            if pubsub is not None:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass
                pubsub = None
            time.sleep(1.0)
            continue
        if msg is None or msg.get("type") != "message":
            continue
        try:
            post(url, msg["data"], args.timeout)
        except (urllib.error.URLError, OSError) as e:
            log.warning("POST %s failed, message dropped: %s", url, e)
    if pubsub is not None:
        pubsub.close()
    client.close()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6404/0", help="Redis URL")
    p.add_argument("--app", required=True,
                   help="base URL of the app's internal listener, e.g. http://127.0.0.1:19511")
    p.add_argument("--channel", default="bench:seed-python:chat", help="pub/sub channel")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per POST")
    return p.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s subscriber %(levelname)s %(message)s")
    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run(args, stop)
    log.info("stopped")


if __name__ == "__main__":
    main()
