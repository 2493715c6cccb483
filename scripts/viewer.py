"""Rule viewer_page: one pair job's token-level page (fsgen.viewer) for a seeded sample of requests.

input:  trace (trace.parquet), generations (generations.jsonl), metrics (metrics.json: scoring has
        written scored_samples.jsonl beside it, read for each request's verdict); the rest are
        dependencies (the models' sidecars: the tokenizer is there; code).
output: page (a self-contained HTML file).
params: requests (sample size), seed (of the sample), tokenizer (the small model's folder or hub
        id), metric (lm-eval "metric,filter" of the verdict; optional, default: the analysis's choice).
log:    log[0].
"""

import logging

from fsgen.atomic import write_text
from fsgen.pipeline.rulescript import log_to
from fsgen.viewer import load_job, render_page, sample_requests

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("viewer")

params = snakemake.params
job = load_job(snakemake.input.trace, tokenizer=params.tokenizer, generations=snakemake.input.generations,
               metric=params.get("metric"))
seed = int(params.seed)
chosen = sample_requests(job.request_ids, int(params.requests), seed)
write_text(snakemake.output.page, render_page(job, chosen, seed))
log.info("wrote %s: requests %s of %d (seed %d), tokenizer %s, %d verdicts", snakemake.output.page, chosen,
         len(job.request_ids), seed, job.tokenizer_name, len(job.verdicts))
