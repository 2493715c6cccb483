"""Rule scaling_law: fit f(r) = b − a·r^(−α) and f = c + d·ln N_small per method × benchmark.

input:  jobs (results/tables/jobs.csv from rule aggregate); reference (optional: published CSV).
output: fits (results/tables/scaling_law.csv: one row per source × method × benchmark with
        a, alpha, b, r2, n_pairs, alt_c, alt_d, alt_r2, status);
        residuals (results/tables/scaling_residuals.csv: one row per point).
        With no pair job to fit, each table is one row whose `status` says so.
params: none.
log:    log[0].
"""

import logging

import pandas as pd

from fsgen.analysis import write_csv
from fsgen.analysis.scaling import scaling_tables
from fsgen.analysis.status import explain_empty, fit_status
from fsgen.analysis.tables import read_tables
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("scaling_law")

reference_path = snakemake.input.get("reference")
reference = pd.read_csv(reference_path) if reference_path else None
jobs = read_tables({"jobs": snakemake.input.jobs})["jobs"]
fits, residuals = scaling_tables(jobs, reference)
fits = fit_status(fits)
why = "no pair job with a collaboration frequency to fit"
write_csv(explain_empty(fits, why), snakemake.output.fits)
write_csv(explain_empty(residuals, why), snakemake.output.residuals)
for row in fits.itertuples():
    log.info("%s %s %s: n=%d a=%.3g alpha=%.3g b=%.3g r2=%.3f alt_r2=%.3f (%s)", row.source, row.method,
             row.benchmark, row.n_pairs, row.a, row.alpha, row.b, row.r2, row.alt_r2, row.status)
