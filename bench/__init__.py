"""The benchmark (`make bench`): bench/run.py is the entry point.

Its parts: common (paths, consoles, a timed step), plan (token ranges and rows), loader
(bulk load, prewarm, sanity check), driver (pgbench runs, CPU meter, profiler, batch,
sizes), lifecycle (200 simulated days on libfaketime's clock) and report (table,
targets, results.json).
"""
