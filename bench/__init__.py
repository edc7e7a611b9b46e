"""Benchmarks of codex-cli-image against the real Codex CLI and the loopback mock backend.

    .venv/bin/python -m bench                       # everything, about 3 minutes
    .venv/bin/python -m bench --only overhead,cold  # some
    .venv/bin/python -m bench --repeat 3            # fewer runs each

Prints one table (medians with min and max over repeated runs; comparisons as ratios of runs
made side by side), saves the raw runs to ``bench/results/`` and, after a full run, rewrites the
table in the README's "Benchmarks" section. Real-CLI benchmarks run in a private network
namespace (the command re-executes itself under ``unshare -n``; root on Linux), so nothing can
leave the machine. Benchmarks are not tests: nothing here fails a build.
"""
