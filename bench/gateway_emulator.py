"""The provider emulator (testsupport/emulator.py) as bench/gateway.py runs it: its own process, so its threads never
share the load client's interpreter, with two changes that only matter at benchmark scale:

- a listen backlog of 1024 (socketserver's default of 5 drops SYNs when hundreds of streams open at once, and a
  dropped SYN costs the client a one-second retransmit that would be charged to whichever path it hit);
- pacing waits that block in select() on the client's socket instead of polling it every 20 ms, so 2,000 paced
  streams cost the emulator almost nothing while they wait (it still notices a client that goes away).

    python bench/gateway_emulator.py --port 8765 --reply "fifty words ..." [--tokens-per-second N]
"""

import select
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testsupport import emulator  # noqa: E402

# Upper bound on one blocking wait, so a stopping emulator is noticed soon.
MAX_WAIT = 0.5


def _blocking_sleep(self, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    sock = self.handler.connection
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.emulator._stopping.is_set():
            return
        try:
            readable, _, _ = select.select([sock], [], [], min(remaining, MAX_WAIT))
        except (OSError, ValueError):
            raise emulator.ClientGone from None
        if readable:
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    raise emulator.ClientGone
            except OSError:
                raise emulator.ClientGone from None
            # Bytes waiting (a pipelined request) are not a close: fall back to a short plain sleep.
            time.sleep(min(max(remaining, 0), 0.02))


emulator._Exchange.sleep = _blocking_sleep
emulator._Server.request_queue_size = 1024

if __name__ == "__main__":
    emulator.main()
