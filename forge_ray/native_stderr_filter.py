"""The filter behind descriptor 2 of a command a person reads (started by
:func:`forge_ray.console.route_native_stderr`, run as a script with ``-I -S``: stdlib only).

It reads what the driver writes to descriptor 2 (its standard input), passes every byte on
to the terminal (its standard output) at once, and sends Ray's C++ log lines to the driver
(descriptor ``argv[1]``) to be written to the run log. It runs in its own process so that
descriptor 2 is drained whatever the driver is doing: a thread of the driver would need the
driver's GIL, and a C++ thread holding a logging lock while it waits on a full pipe can
deadlock with a Python thread that holds the GIL while it waits on that lock. Lines for the
driver are buffered here (dropped beyond a bound) rather than ever blocking that read, and
Ctrl-C is left to the driver: the filter ends when the last writer closes the pipe.
"""

import os
import re
import select
import signal
import sys

#: a line of Ray's C++ core (glog style: ``[2026-12-02 20:00:00,123 E 4242 4243] core_worker.cc:…``)
NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] ")
MAX_PENDING = 1 << 20  # bytes of native lines held for a slow driver before newer ones are dropped


def main(back: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.set_blocking(back, False)
    source, terminal = 0, 1
    pending, to_driver = b"", b""
    while True:
        ready, writable, _ = select.select([source], [back] if to_driver else [], [], 0.1)
        if writable and to_driver:
            try:
                to_driver = to_driver[os.write(back, to_driver):]
            except BlockingIOError:
                pass
            except OSError:  # the driver is gone: its lines have nowhere to go
                to_driver = b""
        chunk = os.read(source, 65536) if ready else None
        if chunk == b"":
            break
        pending += chunk or b""
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if NATIVE_LINE.match(line):
                if len(to_driver) < MAX_PENDING:
                    to_driver += line + b"\n"
            else:
                _write(terminal, line + b"\n")
        # a partial line goes on at once (a progress bar's \r redraw) unless it may be a C++
        # line still being written, and even then within 0.1 s
        if pending and (chunk is None or not pending.startswith(b"[")):
            _write(terminal, pending)
            pending = b""
    if pending:
        _write(terminal, pending)
    os.set_blocking(back, True)
    try:
        os.write(back, to_driver)
    except OSError:
        pass


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass


if __name__ == "__main__":
    main(int(sys.argv[1]))
