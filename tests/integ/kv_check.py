#!/usr/bin/python3
"""Load and verify deterministic values in redis (RESP) or memcached (text
protocol), pipelined over one socket.

  kv_check.py redis|memcached load|verify PORT COUNT SIZE [PREFIX]

verify exits 1 and names the first bad key if any value differs.
"""
import hashlib
import socket
import sys


def value(i, size, prefix):
    seed = hashlib.sha256(f"{prefix}{i}".encode()).hexdigest().encode()
    return (seed * (size // len(seed) + 1))[:size]


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_batch(c, keys, size, prefix, load):
    if load:
        c.send(b"".join(resp("SET", k, value(i, size, prefix))
                        for i, k in keys))
        for _ in keys:
            if c.line() != b"+OK":
                sys.exit("SET failed")
        return None
    c.send(b"".join(resp("GET", k) for _, k in keys))
    for i, k in keys:
        head = c.line()
        got = None if head == b"$-1" else c.exact(int(head[1:]))
        if got != value(i, size, prefix):
            return k
    return None


def mc_batch(c, keys, size, prefix, load):
    if load:
        c.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" %
                        (k.encode(), size, value(i, size, prefix))
                        for i, k in keys))
        for _ in keys:
            if c.line() != b"STORED":
                sys.exit("set failed")
        return None
    c.send(b"".join(b"get %s\r\n" % k.encode() for _, k in keys))
    for i, k in keys:
        head = c.line()
        got = None
        if head.startswith(b"VALUE"):
            got = c.exact(int(head.split()[3]))
            if c.line() != b"END":
                return k
        if got != value(i, size, prefix):
            return k
    return None


def main():
    kind, mode, port, count, size = sys.argv[1:6]
    prefix = sys.argv[6] if len(sys.argv) > 6 else "v"
    count, size = int(count), int(size)
    c = Conn(int(port))
    batch = redis_batch if kind == "redis" else mc_batch
    for start in range(0, count, 500):
        keys = [(i, f"{prefix}:{i}") for i in range(start,
                                                     min(count, start + 500))]
        bad = batch(c, keys, size, prefix, mode == "load")
        if bad:
            sys.exit(f"{kind}: value of {bad} differs")
    print(f"{kind} {mode}: {count} keys of {size} bytes ok")


main()
