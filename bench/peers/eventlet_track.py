#!/usr/bin/python3
"""The 2011 design trackd is compared with: a Python eventlet WSGI /track server.

Mixpanel replaced its Erlang API server with this shape of program (see
/work/shared/context/mixpanel-erlang-to-python.txt): eventlet's raw WSGI server, green threads,
one process per core, nginx in front spreading requests over the processes. This is a small,
fair rendition of it for bench/scenarios.sh, doing the same work per request as trackd's
`write` durability mode and no more:

  - take `data` from the query string (GET) or from a urlencoded form body (POST);
  - decode it: JSON if it starts with '{' or '[', else base64 (a space is a '+' that lost its
    escape, padding optional), then JSON;
  - keep the events that have an `event` name and a `properties.token`;
  - append them, one JSON line each, with one write(2) per request to a file opened O_APPEND,
    without fsync (the `write` mode: durable against a crash of this process, not of the
    machine);
  - answer `1` (at least one event stored) or `0`, as Mixpanel's API does.

    eventlet_track.py --listen 127.0.0.1:PORT --out FILE [--backlog N] [--max-greenlets N]

Debian's python3-eventlet (scripts/deps.sh test); run with /usr/bin/python3.
"""
import argparse
import base64
import binascii
import json
import os
import sys
from urllib.parse import parse_qs

import eventlet
import eventlet.wsgi

# Mixpanel's limit on one request body; a larger one is refused with 413 before reading it.
MAX_BODY = 2 * 1024 * 1024
HEADERS = [("Content-Type", "text/plain"), ("Cache-Control", "no-cache, no-store")]


def decode_data(value):
    """The events carried by one `data` value (a list, maybe empty)."""
    value = value.strip()
    if not value.startswith(("{", "[")):
        raw = value.replace(" ", "+")
        raw += "=" * (-len(raw) % 4)
        try:
            value = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return []
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return []
    events = doc if isinstance(doc, list) else [doc]
    good = []
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("event"), str) or not ev["event"]:
            continue
        props = ev.get("properties")
        if not isinstance(props, dict) or not isinstance(props.get("token"), str):
            continue
        good.append(ev)
    return good


def make_app(fd):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", HEADERS)
            return [b"ok\n"]
        if path.rstrip("/") not in ("/track", "/engage", "/groups"):
            start_response("404 Not Found", HEADERS)
            return [b"not found\n"]
        form = parse_qs(environ.get("QUERY_STRING", ""))
        if environ.get("REQUEST_METHOD") == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                start_response("413 Payload Too Large", HEADERS)
                return [b"0"]
            body = environ["wsgi.input"].read(length)
            form.update(parse_qs(body.decode("latin-1")))
        events = []
        for value in form.get("data", []):
            events.extend(decode_data(value))
        if events:
            lines = "".join(json.dumps(ev, separators=(",", ":")) + "\n" for ev in events)
            os.write(fd, lines.encode())
        start_response("200 OK", HEADERS)
        return [b"1" if events else b"0"]

    return app


def main():
    ap = argparse.ArgumentParser(description="eventlet WSGI /track server (benchmark peer)")
    ap.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (127.0.0.1:8090)")
    ap.add_argument("--out", required=True, help="file the events are appended to")
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--max-greenlets", type=int, default=4096,
                    help="concurrent requests (eventlet's default is 1024)")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    sock = eventlet.listen((host, int(port)), backlog=args.backlog)
    print(f"eventlet_track: listening on {args.listen}, appending to {args.out}", file=sys.stderr)
    eventlet.wsgi.server(sock, make_app(fd), log_output=False, max_size=args.max_greenlets,
                         keepalive=True)


if __name__ == "__main__":
    main()
