"""python -m fal_emulator --port 8765 [--latency 0.5] [--queue-delay 1]"""

from __future__ import annotations

import argparse
import signal
import threading

from . import EmulatorState, FalEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fal_emulator",
                                     description="Local fal.ai emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--queue-delay", type=float, default=0.0, help="seconds IN_QUEUE")
    parser.add_argument("--max-concurrency", type=int, default=None)
    args = parser.parse_args(argv)

    state = EmulatorState(latency_s=args.latency, queue_delay_s=args.queue_delay,
                          max_concurrency=args.max_concurrency)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with FalEmulator(state, host=args.host, port=args.port) as emulator:
        print(emulator.base_url, flush=True)
        while not done.wait(0.5):  # short waits keep signal delivery snappy
            pass


if __name__ == "__main__":
    main()
