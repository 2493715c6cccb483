"""Analyses of collaboration traces: per-job statistics, aggregate tables, scaling law, figures.

Words: a *method* is an algorithm of the registry `fsgen.decoding.methods` (single, oracle,
contrastive, proxy, speculative); a *variant* is one configured instance of it (a config
`methods:` entry, e.g. `oracle_entropy-entropy0.5`). Tables have a `variant` and a `method` column.

Modules (import them directly; this package imports nothing, so reading the output registry
costs no pandas or sklearn):
- `job`: `analyze_job`, one job's trace + metrics -> the `stats.json` record (`JOB_KEYS`);
- `stats`, `uncertainty`, `acceptance`, `routing`: the per-job statistics it is made of;
- `tables`, `detail_tables`, `status`: the aggregate tables and their `status` columns;
- `scaling`, `scaling_forms`, `cost`: the scaling law, its alternatives and the cost frontiers;
- `figures` (with `figbase`, `fig_*`), `summary`: figures and the plain-text digest;
- `outputs`: the one registry of tables, figures and the summary that the rules read.
"""
