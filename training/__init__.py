"""Training and evaluation entry points (installed by scripts/setup.sh: training/pyproject.toml).

Each script runs as `python training/<name>.py` or as its console script (`t2a-train-tracks`,
`t2a-eval`, ...; listed in pyproject.toml).
"""
