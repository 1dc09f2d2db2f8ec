"""The Courier Gateway load test and benchmark (run from the repository root).

::

    python -m loadtest bench                      # the benchmark behind docs/benchmarks.md
    python -m loadtest run --local --events 5000 --duplicates 0.1 --out-of-order 0.1
    python -m loadtest run --url http://127.0.0.1:3000 --secret "$(cat .data/signing-secret)"
    python -m loadtest generate requests.lua --events 1000   # a request file for wrk by hand

How it works: ``requests.py`` writes pre-signed raw HTTP requests (unique events, duplicates,
out-of-order events, any scheme) into a Lua file; ``wrk.lua`` makes wrk send them (shared out
over its threads, for a duration or a count, optionally at a rate) and prints one ``WRK_JSON``
line; ``engine.py`` runs wrk and reads it; ``stack.py`` starts a fresh local stack and samples
its processes' memory and CPU; ``endtoend.py`` checks that every accepted event reached a
terminal state (or the stream) and measures receivedAt → terminal; ``report.py`` writes tables
and the latency plot; ``bench.py`` runs the scenarios and writes ``docs/benchmarks.md``.
"""
