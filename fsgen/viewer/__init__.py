"""The token-level viewer: which tokens System 2 decided, as an HTML page or in the terminal.

    job = load_job("results/arith/oracle/arith-l__arith-s")   # or the trace.parquet itself
    ids = sample_requests(job.request_ids, n=5, seed=0)
    html = render_page(job, ids, seed=0)                       # self-contained page
    text = render_job(job, ids, colour=False)                  # terminal, plain marks

`fsgen show TRACE [--request N] [--html OUT]` on the command line; rules/viewer.smk in the workflow.
See docs/viewer.md.
"""

from fsgen.viewer.data import Job, Request, Token, Verdict, load_job, sample_requests
from fsgen.viewer.html import render_page
from fsgen.viewer.terminal import render_job, use_colour

__all__ = ["Job", "Request", "Token", "Verdict", "load_job", "sample_requests", "render_page", "render_job",
           "use_colour"]
