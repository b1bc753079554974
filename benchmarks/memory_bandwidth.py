"""Memory bandwidth of this machine with N processes copying at once: whether it can feed N CRFs.

    python -m benchmarks.memory_bandwidth [--processes 1,8,16] [--seconds 3]

Each process copies an array over and over, the arrays of all of them together ~1 GB (far larger than any cache;
at least 32 MB each); the figure is the bytes read and written per second by all of them together (counted as
STREAM counts a copy: two bytes per byte copied), only while every one of them was copying. A CRF of a 512 x 512
image fetches 1-2 GB from memory (docs/benchmarks.md, "Where the time goes"), so N CRFs at r images/s each need up to ~2 N r
GB/s: where that approaches this figure, the cores wait for memory and the CRF stage cannot scale with them.
Imports numpy only, so that its processes start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import time

import numpy as np

TOTAL_BYTES = 2**30
MIN_ARRAY_BYTES = 32 * 2**20


def _copy_times(array_bytes: int, seconds: float, ready, results) -> None:
    """Put on ``results`` the end time of each copy of ``array_bytes`` this process makes during ``seconds``,
    starting once every process has its arrays (``ready``, a barrier)."""
    source = np.ones(array_bytes // 4, np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)  # pages mapped before the clock
    ready.wait()
    ends = [time.time()]
    while ends[-1] - ends[0] < seconds:
        np.copyto(target, source)
        ends.append(time.time())
    results.put(ends)


def memory_bandwidth(processes: int, seconds: float = 3.0) -> float:
    """GB/s read plus written by ``processes`` processes copying memory together, over the span in which all of
    them were copying."""
    array_bytes = max(MIN_ARRAY_BYTES, TOTAL_BYTES // (2 * processes))  # a source and a target per process
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_copy_times, args=(array_bytes, seconds, ready, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:  # a process that died (out of memory, killed) never reports
        runs = [results.get(timeout=seconds + 120) for _ in workers]
    except queue.Empty:
        raise RuntimeError(f"a copying process did not report within {seconds + 120:.0f} s") from None
    finally:
        for worker in workers:
            worker.terminate()  # those that reported have returned: a no-op for them
            worker.join()
    start, end = max(run[0] for run in runs), min(run[-1] for run in runs)
    copies = sum(sum(1 for previous, finished in zip(run, run[1:]) if previous >= start and finished <= end)
                 for run in runs)
    return 2 * copies * array_bytes / (end - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_bandwidth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="copying time per process")
    args = parser.parse_args(argv)
    print("| processes | GB/s read + written, all together | per process |")
    print("|---|---|---|")
    for processes in [int(count) for count in args.processes.split(",")]:
        total = memory_bandwidth(processes, args.seconds)
        print(f"| {processes} | {total:.1f} | {total / processes:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
