"""`python -m ivs.runtime.timing`: the child process in which `--runtime auto` times the runtimes.

Reads a pickled `(names, model, format, input_name, sample, threads, weights)` on stdin and writes
the pickled `{runtime: median seconds}` on stdout. Only `ivs.runtime` starts it, with its own data.
"""

from __future__ import annotations

import pickle
import sys

from ivs.runtime import time_runners


def main() -> None:
    names, model, model_format, input_name, sample, threads, weights = pickle.loads(sys.stdin.buffer.read())
    medians = time_runners(names, model, model_format, input_name, sample, threads, weights)
    sys.stdout.buffer.write(pickle.dumps(medians))


if __name__ == "__main__":
    main()
