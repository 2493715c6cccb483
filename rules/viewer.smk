# Token-level viewer (fsgen.viewer): one self-contained HTML page per pair x variant x benchmark
# showing a seeded sample of its requests with the tokens System 2 decided marked, in the
# report's "Examples" category. In-process like score (fsgen.pipeline.rulescript): a page is well
# under a second of work, so a local rule (never one of hundreds of SLURM jobs).
# Config: viewer: {requests, seed} (workflow/schemas/config.schema.yaml).

localrules:
    viewer_page,
    viewer_all,


rule viewer_page:
    input:
        trace=PAIR_DIR / "trace.parquet",
        generations=PAIR_DIR / "generations.jsonl",
        metrics=PAIR_DIR / "metrics.json",
        models=pair_decode_inputs,
        code=[*VIEWER_CODE, script_file("viewer")],
    output:
        page=report(
            VIEWER_PAGE,
            category="Examples",
            subcategory="{benchmark}",
            caption=caption("viewer"),
            labels={"variant": "{variant}", "System 2": "{large}", "System 1": "{small}"},
        ),
    params:
        requests=VIEWER["requests"],
        seed=VIEWER["seed"],
        tokenizer=viewer_tokenizer,
    log:
        LOGS / "viewer" / "{benchmark}" / "{variant}" / "{large}__{small}.log",
    run:
        run_in_process("viewer", input, output, params, wildcards, threads, resources, log, rule)


rule viewer_all:
    input:
        viewer_pages(),
