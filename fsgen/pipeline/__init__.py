"""What the Snakefile needs, as plain functions: the config (loading, schema, defaults, checks),
the jobs it asks for and their resources, the task index, preflight, and rule-script running.

`rules/common.smk` calls these; nothing here imports torch, so building the DAG stays fast.
"""
