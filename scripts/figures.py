"""Rule figures: the aggregate tables -> PNG figures (a PDF with the same stem is written beside each).

input:  the CSVs of rule aggregate by their names — jobs, auroc, positions, histograms,
        speculative, accepted_lengths, router_offline, router_online — plus fits
        (scaling_law.csv) and residuals (scaling_residuals.csv) from rule scaling_law.
output: any of these names, each a .png path (only the named ones are drawn):
        accuracy, collaboration, scaling_law, scaling_small_size, uncertainty_distributions,
        auroc, positions, router_offline, router_online, speculative.
        A figure whose runs are not configured is drawn as a labelled "no data" placeholder.
params: none.
log:    log[0].
"""

import logging

import pandas as pd

from fsgen.analysis.figures import FIGURES, render
from fsgen.analysis.tables import read_tables
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("figures")

inputs = dict(snakemake.input.items())
tables = read_tables({k: v for k, v in inputs.items() if k not in ("fits", "residuals")})
fits = pd.read_csv(inputs["fits"]) if "fits" in inputs else None
residuals = pd.read_csv(inputs["residuals"]) if "residuals" in inputs else None
for name, path in snakemake.output.items():
    if name not in FIGURES:
        raise KeyError(f"figures: unknown output name {name!r}; known: {sorted(FIGURES)}")
    render(name, tables, path, fits, residuals)
    log.info("%s -> %s (+ .pdf)", name, path)
