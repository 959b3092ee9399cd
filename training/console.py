"""Console-script entry points for the modules whose ``main()`` returns a result, not a status.

``train_tracks.main`` and ``train_residual.main`` return the run directory and ``eval_tracks.main``
the metrics (what tests and other scripts use); a console script calls ``sys.exit(main())``, which
would print that result and exit 1. These wrappers run the same ``main`` and exit 0.
"""

from __future__ import annotations


def train_tracks() -> int:
    from training.train_tracks import main

    main()
    return 0


def eval_tracks() -> int:
    from training.eval_tracks import main

    main()
    return 0


def train_residual() -> int:
    from training.train_residual import main

    main()
    return 0
