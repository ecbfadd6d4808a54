"""YAML workflows: the schema, loading with line numbers, ``--set`` overrides, cluster
profiles, clusters, checkpoints and the lock, the runner, the report and its plots."""
