"""Rule scaling_law: the scaling law per variant × benchmark, four forms compared, bootstrap intervals.

input:  jobs (results/tables/jobs.csv from rule aggregate); stats (every stats.json: the per-request
        counts of the request bootstrap; optional: without, only the pairs bootstrap);
        reference (optional: published CSV; its points are fitted per method, as source "paper").
output: fits (scaling_law.csv: f(r) = b − a·r^(−α) and f = c + d·ln N_small per source × variant ×
        benchmark, curve_fit as the FS-GEN authors did); residuals (scaling_residuals.csv);
        scaling_forms, scaling_bootstrap, scaling_bands, scaling_verdicts
        (`fsgen.analysis.scaling_forms.uncertainty_tables`: four forms by AICc and leave-one-pair-out
        error, bootstrap intervals by pairs and by requests, bands, one verdict sentence per group).
        Any subset of these names; with no pair job each table is one row whose `status` says so.
params: n_boot (default 1000), seed (default 0).
log:    log[0].
"""

from fsgen.analysis import outputs
from fsgen.analysis.requests import pair_request_rows, request_frame
from fsgen.analysis.scaling import scaling_tables
from fsgen.analysis.scaling_forms import uncertainty_tables
from fsgen.analysis.status import explain_empty, fit_status
from fsgen.analysis.tables import load_records, rule_inputs, write_table
from fsgen.pipeline.rulescript import rule_script

snakemake, log = rule_script("scaling_law", globals())

named = dict(snakemake.output.items())
outputs.check_names(named, outputs.tables("scaling_law"), "scaling_law")
tables, reference = rule_inputs(snakemake.input)
stats = snakemake.input.get("stats") or []
requests = pair_request_rows(request_frame(load_records([stats] if isinstance(stats, str) else list(stats))))
log.info("%d per-request rows from %s stats.json", len(requests), len(stats) if not isinstance(stats, str) else 1)
fits, residuals = scaling_tables(tables["jobs"], reference)
results = {"fits": fit_status(fits), "residuals": residuals}
results.update(uncertainty_tables(tables["jobs"], reference, requests if len(requests) else None,
                                  n_boot=int(snakemake.params.get("n_boot") or 1000),
                                  seed=int(snakemake.params.get("seed") or 0)))
why = "no pair job with a collaboration frequency to fit"
for name, path in named.items():
    write_table(explain_empty(results[name], why), path)
for row in results["fits"].itertuples():
    log.info("%s %s %s: n=%d a=%.3g alpha=%.3g b=%.3g r2=%.3f alt_r2=%.3f (%s)", row.source, row.variant,
             row.benchmark, row.n_pairs, row.a, row.alpha, row.b, row.r2, row.alt_r2, row.status)
for sentence in results["scaling_verdicts"]["sentence"]:
    log.info("%s", sentence)
