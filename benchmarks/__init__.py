"""Benchmarks of streamml's hot paths, each a ratio against a same-run baseline.

Speed is measured here, not asserted in timed tests. The machines are noisy,
so no absolute number is meaningful on its own: every benchmark measures a
candidate and its baseline in the same process, interleaved round by round,
and reports both rates and their ratio. Run ``python -m benchmarks`` (or
``make bench``); see :mod:`benchmarks.cases` for what each one compares and
:mod:`benchmarks.harness` for how.
"""
