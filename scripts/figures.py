"""Rule figures: the aggregate tables -> PNG figures (a PDF and a `.panels.json` with the same stem beside each).

input:  tables by their registry names (`fsgen.analysis.outputs.figure_inputs()`: jobs, auroc,
        positions, histograms, speculative, accepted_lengths, router_offline, router_online from
        rule aggregate; fits and residuals from rule scaling_law). Unnamed inputs (code) are ignored.
output: any of the figures of the registry, `fsgen.analysis.outputs.FIGURES`, each a .png path
        (only the named ones are drawn). An empty panel says "no data: <why>"; a figure with
        nothing to draw is a labelled placeholder; `<stem>.panels.json` lists the panels and
        whether each drew data.
params: none.
log:    log[0].
"""

import logging

from fsgen.analysis import outputs
from fsgen.analysis.figures import read_panels, render
from fsgen.analysis.tables import read_tables
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("figures")

figures = dict(snakemake.output.items())
outputs.check_names(figures, outputs.FIGURES, "figures")
tables = read_tables({k: v for k, v in snakemake.input.items() if k in outputs.TABLES})
for name, path in figures.items():
    render(name, tables, path, tables.get("fits"), tables.get("residuals"))
    panels = read_panels(path)
    log.info("%s -> %s (+ .pdf, .panels.json): %s, %d of %d panels with data", name, path, panels["status"],
             sum(p["has_data"] for p in panels["panels"]), len(panels["panels"]))
