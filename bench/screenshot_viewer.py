"""The README's viewer screenshot: a job's viewer page rendered by headless Chromium.

    python bench/screenshot_viewer.py results/arith/oracle/arith-l__arith-s docs/img/viewer.png

The page is `fsgen show JOB --html` (fsgen.viewer.render_page) for a seeded sample of requests;
Chromium comes from Debian's packages (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fsgen.viewer import load_job, render_page, sample_requests
from fsgen.viewer.browser import screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="job folder or its trace.parquet")
    parser.add_argument("png", help="where the screenshot goes")
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    job = load_job(args.job)
    chosen = sample_requests(job.request_ids, args.requests, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "viewer.html"
        page.write_text(render_page(job, chosen, args.seed), encoding="utf-8")
        screenshot(page, args.png, args.width, args.height)
    print(f"wrote {args.png}: requests {chosen} of {args.job}")


if __name__ == "__main__":
    main()
