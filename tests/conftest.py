"""Settings every test process shares."""

from __future__ import annotations

import signal

# A test run started in the background by a non-interactive shell (`make test &`, some CI runners) has SIGINT
# ignored, and every child it starts inherits that: the tests that stop a child with SIGINT, as Ctrl-C does
# (`ferry demo --keep`, `ferry serve`, the distributed demo), would then wait on it forever. A handler of our own
# is reset to the default in each child, so the children answer SIGINT as they do in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
