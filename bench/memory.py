#!/usr/bin/env python3
"""Resident memory of Sima under many connections, on loopback only.

Starts Sima (SIMA_BIN, default target/release/sima) with a small config, a local upstream,
then measures VmRSS: idle, with N idle keep-alive client connections (each has made one
request), and with M concurrent slow streaming uploads in flight. Prints KiB per
connection. Figures are for comparison on one machine, not absolute truths.

    python3 bench/memory.py [--idle 10000] [--uploads 1000]
"""
import argparse, asyncio, os, resource, signal, subprocess, sys, tempfile, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

async def upstream(reader, writer):
    # Reads a request head and a body of Content-Length or chunked (discarded), answers 200.
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            if b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif b"content-length:" in lower:
                n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(n)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except (Exception, asyncio.CancelledError):
        writer.close()

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--uploads", type=int, default=1000)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * (a.idle + a.uploads) + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    up = await asyncio.start_server(upstream, "127.0.0.2", 0, backlog=4096)
    up_port = up.sockets[0].getsockname()[1]
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "sima.yaml")
    with open(cfg, "w") as f:
        f.write(f"""listen: 127.0.0.1:23128
admin_listen: 127.0.0.1:29464
audit: {{ dir: {tmp}/audit }}
limits: {{ max_connections: {a.idle + a.uploads + 100} }}
geo:
  overrides:
    - {{ cidr: 127.0.0.2/32, country: US }}
""")
    binary = os.environ.get("SIMA_BIN", "target/release/sima")
    env = dict(os.environ, RUST_LOG="warn")

    async def start():
        p = subprocess.Popen([binary, "run", "--config", cfg], env=env, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard)))
        for _ in range(100):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", 23128)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        return p

    def stop(p):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()

    # Each phase gets a fresh process: the allocator returns freed memory to the system on
    # its own schedule, so a phase measured after another would count the first's leftovers
    # (or their release) as its own.
    try:
        p = await start()
        try:
            base = rss_kib(p.pid)
            req = (f"GET http://127.0.0.2:{up_port}/ HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n").encode()
            conns = []
            for i in range(a.idle):
                if i and i % 2000 == 0:
                    print(f"  {i} connections open", file=sys.stderr)
                r, w = await asyncio.open_connection("127.0.0.1", 23128)
                w.write(req)
                await w.drain()
                await r.readuntil(b"ok")
                conns.append((r, w))
            await asyncio.sleep(1)
            idle = rss_kib(p.pid)
            print(f"baseline RSS {base} KiB")
            print(f"{a.idle} idle keep-alive connections: RSS {idle} KiB, {(idle - base) / max(a.idle, 1):.1f} KiB per connection")
            for _, w in conns:
                w.close()
        finally:
            stop(p)

        p = await start()
        try:
            base = rss_kib(p.pid)
            # Slow uploads: head + first chunks, then hold.
            ups = []
            head = (f"POST http://127.0.0.2:{up_port}/u HTTP/1.1\r\nHost: 127.0.0.2\r\n"
                    "content-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n").encode()
            chunk = b"%x\r\n" % 16384 + b"a" * 16384 + b"\r\n"
            for i in range(a.uploads):
                r, w = await asyncio.open_connection("127.0.0.1", 23128)
                w.write(head + chunk * 5)
                await w.drain()
                ups.append((r, w))
            await asyncio.sleep(2)
            busy = rss_kib(p.pid)
            print(f"{a.uploads} concurrent streaming uploads (80 KiB sent each, in flight): RSS {busy} KiB, "
                  f"{(busy - base) / max(a.uploads, 1):.1f} KiB per upload (fresh process, baseline {base} KiB)")
            for _, w in ups:
                w.close()
        finally:
            stop(p)
    finally:
        up.close()

if __name__ == "__main__":
    asyncio.run(main())
