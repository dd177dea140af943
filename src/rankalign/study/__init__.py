"""The study: label quality of ranking rules, then methods x seeds on held-out lists, with intervals.

``rankalign study CONFIG`` (docs/study.md). Python::

    from rankalign.study import load_study_config, run_study
    run_study(load_study_config("configs/study/cpu.yaml"))
"""

from rankalign.study.config import StudyConfig, load_study_config
from rankalign.study.run import run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]
