"""Rule scaling_law: fit f(r) = b − a·r^(−α) and f = c + d·ln N_small per variant × benchmark.

input:  jobs (results/tables/jobs.csv from rule aggregate); reference (optional: published CSV;
        its points are fitted per method, as source "paper").
output: fits (results/tables/scaling_law.csv: one row per source × variant × benchmark with
        a, alpha, b, r2, n_pairs, alt_c, alt_d, alt_r2, status);
        residuals (results/tables/scaling_residuals.csv: one row per point).
        With no pair job to fit, each table is one row whose `status` says so.
params: none.
log:    log[0].
"""

from fsgen.analysis.scaling import scaling_tables
from fsgen.analysis.status import explain_empty, fit_status
from fsgen.analysis.tables import rule_inputs, write_table
from fsgen.pipeline.rulescript import rule_script

snakemake, log = rule_script("scaling_law", globals())

tables, reference = rule_inputs(snakemake.input)
fits, residuals = scaling_tables(tables["jobs"], reference)
fits = fit_status(fits)
why = "no pair job with a collaboration frequency to fit"
write_table(explain_empty(fits, why), snakemake.output.fits)
write_table(explain_empty(residuals, why), snakemake.output.residuals)
for row in fits.itertuples():
    log.info("%s %s %s: n=%d a=%.3g alpha=%.3g b=%.3g r2=%.3f alt_r2=%.3f (%s)", row.source, row.variant,
             row.benchmark, row.n_pairs, row.a, row.alpha, row.b, row.r2, row.alt_r2, row.status)
