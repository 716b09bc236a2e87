"""Bench-only memory probe (bench/websocket_turns.py --memory-probe DIR puts this directory on the server's
PYTHONPATH; nothing else imports it). With QNX_MEMPROBE_DIR set, each SIGUSR1 writes a tracemalloc snapshot and a
count of live objects by type to that directory: `snapshot-<n>.tracemalloc` and `types-<n>.json` (n = 1, 2, …).
Tracing starts at the first signal (start-up under tracemalloc would take minutes), so snapshot 1 is empty and
later ones hold what was allocated since, and is still alive."""

import os

if os.environ.get("QNX_MEMPROBE_DIR"):
    import collections
    import gc
    import json
    import signal
    import tracemalloc

    _out = os.environ["QNX_MEMPROBE_DIR"]
    _taken = [0]

    def _dump(signum, frame):
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("QNX_MEMPROBE_FRAMES", "16")))
        _taken[0] += 1
        number = _taken[0]
        tracemalloc.take_snapshot().dump(os.path.join(_out, f"snapshot-{number}.tracemalloc"))
        counts = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        with open(os.path.join(_out, f"types-{number}.json"), "w") as handle:
            json.dump(dict(counts.most_common(400)), handle)
        with open(os.path.join(_out, f"done-{number}"), "w") as handle:
            handle.write(str(tracemalloc.get_traced_memory()))

    signal.signal(signal.SIGUSR1, _dump)
