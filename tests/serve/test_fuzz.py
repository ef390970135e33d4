"""A few thousand malformed requests to a real server on 127.0.0.1 (bounded in count and time): every answer is a
4xx with a message, and the server still answers correctly afterwards."""

from __future__ import annotations

import http.client
import json
import random
import time

MAX_REQUESTS = 2500
MAX_SECONDS = 40.0


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 1.5, 1e308, ""])
    if kind == 1:
        return rng.randrange(-10**6, 10**6)
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x9FFF)) for _ in range(rng.randrange(0, 8)))
    if kind == 3:
        return rng.choice(["texts", "inputs", "question", "context", "[MASK]", "\u0000", "\ud800"])
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {str(_random_json(rng, depth + 1)): _random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _malformed(rng: random.Random) -> bytes:
    """A body that is wrong by construction (the server allows 8 texts of at most 300 characters, 16 KiB)."""
    valid = json.dumps({"texts": ["这家酒店很干净", "服务很好"]}, ensure_ascii=rng.random() < 0.5).encode()
    kind = rng.randrange(10)
    if kind == 0:  # cut short: never complete JSON
        return valid[: rng.randrange(0, len(valid) - 1)]
    if kind == 1:  # a byte that is never valid UTF-8
        i = rng.randrange(len(valid))
        return valid[:i] + bytes([rng.choice([0xFF, 0xFE, 0xC0, 0xF8])]) + valid[i:]
    if kind == 2:  # random bytes, with an invalid one
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))) + b"\xff"
    if kind == 3:  # any JSON that is not an object
        value = _random_json(rng)
        while isinstance(value, dict):
            value = _random_json(rng)
        return json.dumps(value).encode()
    if kind == 4:  # an object without the texts field, or with another field beside it
        if rng.random() < 0.5:
            return json.dumps({"texts": ["好"], "x" + str(rng.randrange(99)): _random_json(rng)}).encode()
        obj = {str(_random_json(rng, 2)): _random_json(rng, 2) for _ in range(rng.randrange(0, 3))}
        obj.pop("texts", None)
        return json.dumps(obj).encode()
    if kind == 5:  # texts that is not a list, an empty list, or a list with one bad entry
        value = _random_json(rng)
        while isinstance(value, list):
            value = _random_json(rng)
        texts = ["好", "服务"]
        texts.insert(rng.randrange(3), rng.choice([None, 1, 2.5, True, "", " \n\t", [], {}, ["好"]]))
        return json.dumps({"texts": rng.choice([value, [], texts])}).encode()
    if kind == 6:  # too many texts
        return json.dumps({"texts": ["好"] * rng.randrange(9, 40)}).encode()
    if kind == 7:  # a text over the length limit
        return json.dumps({"texts": ["字" * rng.randrange(301, 2000)]}).encode()
    if kind == 8:  # a body over the size limit
        return b'{"texts": ["' + b"a" * rng.randrange(16 * 1024, 40 * 1024) + b'"]}'
    return b"[" * rng.randrange(1000, 8000)  # deep nesting, never closed


def test_malformed_requests_get_4xx_and_the_server_survives(servers):
    server = servers["classification"]
    good = {"texts": ["这家酒店很干净"]}
    status, before = server.predict(good)
    assert status == 200
    rng = random.Random(1234)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sent, bad, start = 0, [], time.monotonic()
    try:
        while sent < MAX_REQUESTS and time.monotonic() - start < MAX_SECONDS:
            body = _malformed(rng)
            method, path = ("POST", "/predict") if rng.random() < 0.95 else rng.choice(
                [("GET", "/predict"), ("PUT", "/predict"), ("POST", "/nope"), ("DELETE", "/info")])
            conn.request(method, path, body=body, headers={"Content-Type": rng.choice(
                ["application/json", "text/plain", "application/octet-stream"])})
            r = conn.getresponse()
            data = r.read()
            sent += 1
            try:
                detail = json.loads(data).get("detail")
            except ValueError:
                detail = None
            if not (400 <= r.status < 500 and isinstance(detail, str) and detail):
                bad.append((r.status, body[:80], data[:200]))
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    finally:
        conn.close()
    assert sent >= 500, f"only {sent} requests in {MAX_SECONDS} s"
    assert not bad, f"{len(bad)} of {sent} answers were not a 4xx with a message, e.g. {bad[:3]}"
    assert server.proc.poll() is None
    assert server.predict(good) == (200, before)
    assert server.request("GET", "/health") == (200, {"status": "ok"})
