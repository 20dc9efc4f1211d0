"""Coverage-guided fuzzing (atheris) of the NDJSON framer, the request parser and the SSE
decoder, with the same spec models as tests/fuzz (tests/fuzz/oracles.py).

    .venv/bin/python fuzz/fuzz_decoders.py -max_total_time=300 [corpus_dir]

The first input byte picks the target and the chunking; a failed check aborts with the input
saved by libFuzzer (crash-*), which tests/fuzz can then replay.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris

with atheris.instrument_imports():
    from tests.fuzz.oracles import check_framer, check_request, check_sse


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    selector, step, body = data[0], data[1] or 1, data[2:]
    cuts = list(range(0, len(body), step))
    target = selector % 4
    if target == 0:
        check_framer(body, cuts, max_line=1 + selector)
    elif target == 1:
        check_request(body)
    elif target == 2:
        check_sse(body, cuts)
    else:
        check_sse(body, cuts, bound=1 + selector)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
