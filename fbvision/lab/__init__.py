"""The smoothing lab: the research side of fbvision, for the notebooks.

* :mod:`~fbvision.lab.detections` - detection logs with ground truth (synthetic scenes, the real detector, CameraLogic);
* :mod:`~fbvision.lab.strategies` - grids of smoothing settings scored against ground truth;
* :mod:`~fbvision.lab.snippets` - a chosen setting as a config snippet;
* :mod:`~fbvision.lab.plots` - one track's timeline;
* :mod:`~fbvision.lab.errormodel` - the detector's measured error model (``DEMO_MODEL_ERRORS``);
* :mod:`~fbvision.lab.reviewed` - the same scoring on a reviewed run (verdicts and missed events from the review page);
* :mod:`~fbvision.lab.groundtruth` - expected alerts of a scenario and the matching of raised ones;
* :mod:`~fbvision.lab.draw` / :mod:`~fbvision.lab.replay` - annotated frames, previews and alert snapshots.
* :mod:`~fbvision.lab.horseday` - 24 h synthetic days per scenario family and their time budget vs the script.

The lab may import any stage; no stage imports the lab (the import contract in pyproject.toml).
``from fbvision import lab`` gives the names of the first five modules directly.
"""

from fbvision.lab.detections import (  # noqa: F401
    DEFAULT_MODEL,
    LOG_COLUMNS,
    SOURCE_ERROR_MODEL,
    SOURCE_GROUND_TRUTH,
    SOURCE_MODEL,
    TruthNoise,
    detection_log,
    log_summary,
    truth_candidates,
    variants,
)
from fbvision.lab.errormodel import (  # noqa: F401
    DEMO_MODEL_ERRORS,
    DetectorErrors,
    measure_detector,
)
from fbvision.lab.plots import (  # noqa: F401
    BEHAVIOUR_COLOURS,
    plot_track_timeline,
)
from fbvision.lab.reviewed import (  # noqa: F401
    Reviews,
    evaluate_reviewed,
    load_reviewed_run,
    load_reviews,
    reviewed_expected,
    scripted_review,
)
from fbvision.lab.snippets import (  # noqa: F401
    config_snippet,
)
from fbvision.lab.strategies import (  # noqa: F401
    DEFAULT_GRID,
    FAMILIES,
    MIN_EVENTS,
    TIE_TTA_S,
    Recommendation,
    Strategy,
    best_strategy,
    dedupe_strategies,
    describe,
    effective_setting,
    evaluate_strategies,
    expected_for,
    false_rate_text,
    rank_strategies,
    raw_signal,
    recommend,
    run_strategy,
    strategy_grid,
    tie_notices,
    with_params,
)
