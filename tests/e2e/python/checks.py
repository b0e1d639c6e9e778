"""What the scenario scripts share: the command line, the JSON report of named
checks, and leaving rooms without letting a failed leave change the verdict."""
import argparse
import asyncio
import json
import logging
import os
import sys
import time
import warnings


async def disconnect_all(rooms):
    """Leaves every room still connected, each within 5 s; a failed leave is
    logged only. A room the server already ended (a session evicted by a
    second one of the same identity) is left alone: disconnecting it again
    has aborted the SDK's process at times."""
    for room in rooms:
        if not room.isconnected():
            continue
        try:
            await asyncio.wait_for(room.disconnect(), 5)
        except Exception as e:  # a failed leave does not change the verdict
            logging.warning("disconnect: %r", e)


async def until(predicate, timeout):
    """Polls `predicate` every 50 ms; whether it held within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def run(doc, scenario, *, room, timeout, extra_args=()):
    """Parses the common flags (and `extra_args`: (flag, kwargs) pairs), runs
    `scenario(args, checks, seen)` within `--timeout` seconds, prints the report
    (`checks` name -> bool, `seen`, `error` naming the failed checks,
    `elapsed_s`) as one JSON line, and exits 1 when anything failed."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gateway WebSocket URL, e.g. ws://192.0.2.10:7910")
    parser.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", "devkey"))
    parser.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET", "secret"))
    parser.add_argument("--room", default=room)
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds for the whole scenario")
    for flag, kwargs in extra_args:
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args()
    # Test secrets may be shorter than PyJWT recommends; the warning is noise here.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("SDK_LOG", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main():
        checks, seen = {}, {}
        report = {"url": args.url, "checks": checks, "seen": seen}
        start = time.monotonic()
        try:
            await asyncio.wait_for(scenario(args, checks, seen), args.timeout)
        except asyncio.TimeoutError:
            report["error"] = f"no result within {args.timeout} s"
        except Exception as e:
            report["error"] = f"{type(e).__name__}: {e}"
        failed = [name for name, ok in checks.items() if not ok]
        if failed and "error" not in report:
            report["error"] = "failed: " + "; ".join(failed)
        report["elapsed_s"] = round(time.monotonic() - start, 3)
        print(json.dumps(report), flush=True)
        return 1 if "error" in report else 0

    exit_now(asyncio.run(main()))


def exit_now(code):
    """Exits with `code` once the report is out, skipping the interpreter's
    teardown: the SDK's native side has aborted the process there at times
    (exit code none, after a complete report), which is not the call's
    verdict."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
