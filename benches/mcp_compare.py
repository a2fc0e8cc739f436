"""One-off comparison (not a test): `blendwire mcp` vs the `blender-remote` MCP server from PyPI
(blender-remote 1.3.3, FastMCP), both over stdio, driven by the official MCP Python SDK, against the
same `blendwire serve` on `blender -b`.

Measures, for each server:
  start-up   spawn of the server process -> `initialize` answered (median of --starts runs)
  list       one `tools/list` round trip (median over the start-up runs)
  first      the first get_scene_info of a session (includes connecting to Blender)
  per call   --calls sequential get_scene_info calls in one session (after --warmup), p50/p90/p99/mean

Usage: .venv/bin/python benches/mcp_compare.py [--starts 5] [--calls 300] [--warmup 20] [--json OUT]
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bwtest  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)


def servers(port):
    return {
        "blendwire mcp": [os.path.join(VENV_BIN, "blendwire"), "mcp", "--blender-port", str(port)],
        "blender-remote (PyPI 1.3.3)": [os.path.join(VENV_BIN, "blender-remote"), "--blender-port", str(port)],
    }


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_session(cmd, calls, warmup, errlog):
    params = StdioServerParameters(command=cmd[0], args=cmd[1:])
    t0 = time.perf_counter()
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            startup = time.perf_counter() - t0
            t = time.perf_counter()
            await session.list_tools()
            listing = time.perf_counter() - t
            t = time.perf_counter()
            first = await session.call_tool("get_scene_info", {})
            first_s = time.perf_counter() - t
            if first.is_error:
                raise RuntimeError(f"{cmd[0]}: get_scene_info failed: {first.content}")
            latencies = []
            for i in range(warmup + calls):
                t = time.perf_counter()
                r = await session.call_tool("get_scene_info", {})
                dt = time.perf_counter() - t
                if r.is_error:
                    raise RuntimeError(f"{cmd[0]}: get_scene_info failed: {r.content}")
                if i >= warmup:
                    latencies.append(dt)
            return startup, listing, first_s, latencies


async def measure(cmd, starts, calls, warmup):
    startups, listings, firsts, latencies = [], [], [], []
    with open(os.devnull, "w") as errlog:
        for run in range(starts):
            # Only the last run does the long call series; the others measure start-up.
            s, li, f, lat = await one_session(
                cmd, calls if run == starts - 1 else 0, warmup if run == starts - 1 else 0, errlog
            )
            startups.append(s)
            listings.append(li)
            firsts.append(f)
            latencies += lat
    ms = lambda v: round(v * 1000, 3)  # noqa: E731
    return {
        "startup_ms_median": ms(statistics.median(startups)),
        "startup_ms_all": [ms(v) for v in startups],
        "list_tools_ms_median": ms(statistics.median(listings)),
        "first_call_ms_median": ms(statistics.median(firsts)),
        "calls": len(latencies),
        "call_ms_p50": ms(pct(latencies, 0.5)),
        "call_ms_p90": ms(pct(latencies, 0.9)),
        "call_ms_p99": ms(pct(latencies, 0.99)),
        "call_ms_mean": ms(statistics.fmean(latencies)),
        "calls_per_s": round(len(latencies) / sum(latencies), 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    # blender-remote prints a banner on stdout (the protocol stream); the SDK logs a traceback for
    # each such line and carries on. Keep the table readable.
    logging.getLogger("mcp.client.stdio").setLevel(logging.CRITICAL)
    sp = bwtest.start_serve("background")
    try:
        results = {}
        for name, cmd in servers(sp.port).items():
            results[name] = anyio.run(measure, cmd, args.starts, args.calls, args.warmup)
    finally:
        sp.shutdown()

    print(
        f"blendwire serve on blender -b (Blender {sp.version}), port {sp.port}; "
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    )
    cols = [
        "startup_ms_median",
        "list_tools_ms_median",
        "first_call_ms_median",
        "call_ms_p50",
        "call_ms_p90",
        "call_ms_p99",
        "call_ms_mean",
        "calls_per_s",
    ]
    print(
        "| server | start-up to initialize (ms, median) | tools/list (ms) | first call (ms) | "
        "get_scene_info p50 | p90 | p99 | mean (ms) | calls/s |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:,}" for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blender": sp.version, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
