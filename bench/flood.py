#!/usr/bin/env python3
"""Flooders for bench/flood.sh (docs/benchmarks.md, "Flood figures"). Stdlib only.

  flood.py turn  --dst IP:PORT --sources CIDR --count N --duration S [--rate PPS]
      Unauthenticated TURN requests from many source addresses, spoofed through a
      raw socket (IP_HDRINCL), so one process can speak for 100 000 sources. Run it
      inside a network namespace whose loopback holds the source range
      (`ip route add local CIDR dev lo`), so the relay's answers are delivered
      (and dropped: nothing listens) instead of failing to route. Mix, per packet:
        60 % Allocate, bare 20-byte header, random transaction id
        20 % Allocate with REQUESTED-TRANSPORT and junk attributes
        15 % Allocate with USERNAME, REALM, a forged NONCE and MESSAGE-INTEGRITY
         5 % of packets (any of the above) from 20 fixed "heavy" sources, over the
             per-source rate limit; the rest cycle through the other sources.
      Packets come from a prebuilt pool of 3 800 (transaction ids repeat across
      sources, never within one source's few requests).
      Prints one JSON line: packets sent, seconds, rate, sources used.

  flood.py ws-drop --gw IP:PORT --sources CIDR --count N --concurrency C
      TCP connections to /rtc dropped without a token: 1/3 closed right after
      connect, 1/3 after half a request line, 1/3 sending a WebSocket upgrade without
      a token (the gateway answers 401; the answer is read and counted).

  flood.py ws-garbage --gw IP:PORT --tokens FILE --count N --concurrency C
      WebSocket upgrades with a valid join token (one per line in FILE, reused
      round robin), then garbage binary frames (random bytes, 1-4 frames of
      1-2000 bytes) and close. Counts 101s, JoinResponses and server closes.

  flood.py joins --gw IP:PORT --api-key K --api-secret S --count N --interval S
      Well-behaved clients: mint a token (POST /v1/tokens), open /rtc, wait for the
      JoinResponse (first SignalResponse with `join`, field 1), hold 0.5 s, leave.
      Prints successes and join latency percentiles.

Every mode is bounded by --count and --duration.
"""

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time
import urllib.request

MAGIC = 0x2112A442


# --- TURN -------------------------------------------------------------------


def stun_attr(typ, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", typ, len(value)) + value + b"\0" * pad


def stun(typ, attrs):
    body = b"".join(attrs)
    return struct.pack("!HHI", typ, len(body), MAGIC) + os.urandom(12) + body


def allocate_bare():
    return stun(0x0003, [])


def allocate_junk():
    attrs = [stun_attr(0x0019, b"\x11\0\0\0")]  # REQUESTED-TRANSPORT UDP
    for _ in range(random.randint(1, 6)):
        typ = random.choice([0x8000 + random.randint(0, 0x7FFF), random.randint(0x0030, 0x7FFF)])
        attrs.append(stun_attr(typ, os.urandom(random.randint(0, 64))))
    return stun(0x0003, attrs)


def allocate_forged():
    # USERNAME, REALM, NONCE, then MESSAGE-INTEGRITY (random: the flooder has no key).
    user = f"{int(time.time()) + 3600}:flood{random.randint(0, 9999)}".encode()
    nonce = os.urandom(18).hex().encode()
    attrs = [
        stun_attr(0x0019, b"\x11\0\0\0"),
        stun_attr(0x0006, user),
        stun_attr(0x0014, b"meridian"),
        stun_attr(0x0015, nonce),
    ]
    body = b"".join(attrs)
    mi = stun_attr(0x0008, os.urandom(20))
    length = len(body) + len(mi)
    return struct.pack("!HHI", 0x0003, length, MAGIC) + os.urandom(12) + body + mi


def ip_udp_parts(dst, sport, dport, payload):
    """An IPv4+UDP packet split around its source address: (before, after)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    # version/IHL, TOS, total length, id, flags/frag, TTL, proto, checksum (the kernel fills it in)
    before = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0)
    return before, dst + udp


def flood_turn(a):
    host, port = a.dst.rsplit(":", 1)
    dst = socket.inet_aton(host)
    dport = int(port)
    net = ipaddress.ip_network(a.sources)
    base = int(net.network_address) + 1
    n_sources = min(a.source_count, net.num_addresses - 2)
    heavy = [struct.pack("!I", base + i) for i in range(20)]
    # A pool of prebuilt packets (each its own transaction id and source port), so
    # the send loop only splices in a source address: the mix by weight.
    pool, kinds_of = [], []
    for kind, make, n in (("bare", allocate_bare, 60), ("junk", allocate_junk, 20), ("forged", allocate_forged, 15)):
        for _ in range(n * 40):
            pool.append(ip_udp_parts(dst, random.randint(1024, 65535), dport, make()))
            kinds_of.append(kind)
    order = [struct.pack("!I", base + i) for i in range(20, n_sources)]
    random.shuffle(order)  # each source sends a few requests spread over the run
    picks = [random.randrange(len(pool)) for _ in range(65536)]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    target = (host, 0)
    sendto = s.sendto
    start = time.monotonic()
    deadline = start + a.duration
    sent = errors = heavy_sent = 0
    kind_counts = {"bare": 0, "junk": 0, "forged": 0}
    n_order = len(order)
    i = 0
    while sent < a.count:
        now = time.monotonic()
        if now >= deadline:
            break
        if a.rate and sent > (now - start) * a.rate:
            time.sleep(0.001)
            continue
        for _ in range(min(256, a.count - sent)):
            k = picks[i & 0xFFFF]
            before, after = pool[k]
            if i % 20 == 0:  # 5 %: the heavy sources
                src = heavy[(i // 20) % 20]
                heavy_sent += 1
            else:
                src = order[i % n_order]
                kind_counts[kinds_of[k]] += 1
            i += 1
            try:
                sendto(before + src + after, target)
                sent += 1
            except OSError:
                errors += 1
    secs = time.monotonic() - start
    kind_counts["heavy"] = heavy_sent
    print(json.dumps({
        "mode": "turn", "sent": sent, "errors": errors, "seconds": round(secs, 2),
        "rate": round(sent / secs) if secs else 0, "sources": min(n_order, i) + len(heavy), "kinds": kind_counts,
    }))


# --- WebSocket ----------------------------------------------------------------


def source_picker(cidr):
    if not cidr:
        return lambda: None
    net = ipaddress.ip_network(cidr)
    base, span = int(net.network_address) + 1, net.num_addresses - 2
    return lambda: (str(ipaddress.ip_address(base + random.randrange(span))), 0)


def upgrade_request(path, host):
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def read_status(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    return int(line.split()[1]) if len(line.split()) > 1 else 0


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    if b1 & 0x80:
        await reader.readexactly(4)  # servers do not mask; tolerate it anyway
    return b0 & 0x0F, await reader.readexactly(n)


async def bounded(count, concurrency, duration, one):
    stats = {}
    deadline = time.monotonic() + duration
    next_i = 0

    async def worker():
        nonlocal next_i
        while next_i < count and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            try:
                outcome = await asyncio.wait_for(one(i), timeout=10)
            except asyncio.TimeoutError:
                outcome = "timeout"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                outcome = "error:" + type(e).__name__
            stats[outcome] = stats.get(outcome, 0) + 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats, time.monotonic() - start


async def close_writer(w):
    w.close()
    try:
        await w.wait_closed()
    except OSError:
        pass


def flood_ws_drop(a):
    host, port = a.gw.rsplit(":", 1)
    pick = source_picker(a.sources)

    async def one(i):
        r, w = await asyncio.open_connection(host, int(port), local_addr=pick())
        kind = i % 3
        try:
            if kind == 0:
                return "dropped after connect"
            if kind == 1:
                w.write(b"GET /rtc?acc")
                await w.drain()
                return "dropped mid request"
            w.write(upgrade_request("/rtc", a.gw))
            await w.drain()
            return f"upgrade without token: {await read_status(r)}"
        finally:
            await close_writer(w)

    stats, secs = asyncio.run(bounded(a.count, a.concurrency, a.duration, one))
    print(json.dumps({"mode": "ws-drop", "seconds": round(secs, 2),
                      "rate": round(sum(stats.values()) / secs) if secs else 0, "outcomes": stats}))


def flood_ws_garbage(a):
    host, port = a.gw.rsplit(":", 1)
    tokens = [t.strip() for t in open(a.tokens) if t.strip()]
    pick = source_picker(a.sources)

    async def one(i):
        r, w = await asyncio.open_connection(host, int(port), local_addr=pick())
        try:
            w.write(upgrade_request(f"/rtc?access_token={tokens[i % len(tokens)]}&protocol=16&sdk=flood", a.gw))
            await w.drain()
            status = await read_status(r)
            if status != 101:
                return f"status {status}"
            op, first = await read_frame(r)
            joined = op == 2 and first[:1] == b"\x0a"
            for _ in range(random.randint(1, 4)):
                w.write(ws_frame(2, os.urandom(random.randint(1, 2000))))
            await w.drain()
            # Wait (briefly) for the server to close the socket on the garbage.
            closed = False
            try:
                while True:
                    op, _ = await asyncio.wait_for(read_frame(r), timeout=1.0)
                    if op == 8:
                        closed = True
                        break
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                closed = closed or r.at_eof()
            return ("joined" if joined else "no join") + (", closed by server" if closed else ", still open after 1 s")
        finally:
            await close_writer(w)

    stats, secs = asyncio.run(bounded(a.count, a.concurrency, a.duration, one))
    print(json.dumps({"mode": "ws-garbage", "seconds": round(secs, 2),
                      "rate": round(sum(stats.values()) / secs) if secs else 0, "outcomes": stats}))


def mint(gw, key, secret, room, identity):
    req = urllib.request.Request(
        f"http://{gw}/v1/tokens", data=json.dumps({"room": room, "identity": identity}).encode(),
        headers={"content-type": "application/json",
                 "authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["token"]


def mint_tokens(a):
    for i in range(a.count):
        print(mint(a.gw, a.api_key, a.api_secret, f"{a.room}{i % a.rooms}", f"{a.identity}{i}"))


def joins(a):
    host, port = a.gw.rsplit(":", 1)
    latencies, failures = [], {}

    async def one(i):
        token = await asyncio.to_thread(mint, a.gw, a.api_key, a.api_secret, f"good{i % 5}", f"good-{os.getpid()}-{i}")
        started = time.monotonic()
        r, w = await asyncio.open_connection(host, int(port))
        try:
            w.write(upgrade_request(f"/rtc?access_token={token}&protocol=16&sdk=flood-good", a.gw))
            await w.drain()
            status = await read_status(r)
            if status != 101:
                return f"status {status}"
            op, first = await read_frame(r)
            if not (op == 2 and first[:1] == b"\x0a"):
                return "first frame not a JoinResponse"
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.5)
            w.write(ws_frame(8, b"\x03\xe8"))
            await w.drain()
            return "joined"
        finally:
            await close_writer(w)

    async def run():
        deadline = time.monotonic() + a.duration
        tasks = []
        for i in range(a.count):
            if time.monotonic() >= deadline:
                break
            tasks.append(asyncio.create_task(asyncio.wait_for(one(i), timeout=10)))
            await asyncio.sleep(a.interval)
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    ok = 0
    for res in results:
        if res == "joined":
            ok += 1
        else:
            k = res if isinstance(res, str) else type(res).__name__
            failures[k] = failures.get(k, 0) + 1
    lat = sorted(latencies)
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None
    print(json.dumps({"mode": "joins", "attempted": len(results), "joined": ok, "failures": failures,
                      "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95), "latency_ms_max": pct(1.0)}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("turn")
    t.add_argument("--dst", required=True)
    t.add_argument("--sources", default="10.76.0.0/15")
    t.add_argument("--source-count", type=int, default=50_000)
    t.add_argument("--count", type=int, default=1_000_000)
    t.add_argument("--duration", type=float, default=30)
    t.add_argument("--rate", type=float, default=0, help="packets/s; 0 = as fast as it goes")
    for name in ("ws-drop", "ws-garbage"):
        w = sub.add_parser(name)
        w.add_argument("--gw", required=True)
        w.add_argument("--sources", default="")
        w.add_argument("--count", type=int, default=10_000)
        w.add_argument("--concurrency", type=int, default=64)
        w.add_argument("--duration", type=float, default=60)
        if name == "ws-garbage":
            w.add_argument("--tokens", required=True)
    for name in ("mint", "joins"):
        m = sub.add_parser(name)
        m.add_argument("--gw", required=True)
        m.add_argument("--api-key", default="devkey")
        m.add_argument("--api-secret", default="secret")
        m.add_argument("--count", type=int, default=100)
        if name == "mint":
            m.add_argument("--room", default="flood")
            m.add_argument("--rooms", type=int, default=10)
            m.add_argument("--identity", default="garbage")
        else:
            m.add_argument("--interval", type=float, default=0.2)
            m.add_argument("--duration", type=float, default=60)
    a = p.parse_args()
    {"turn": flood_turn, "ws-drop": flood_ws_drop, "ws-garbage": flood_ws_garbage,
     "mint": mint_tokens, "joins": joins}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
