"""All stages, imported in pipeline order (registration order is run order)."""

from semmem.stages import ingest  # noqa: F401
from semmem.stages import corpus  # noqa: F401
from semmem.stages import scoring  # noqa: F401
from semmem.stages import near  # noqa: F401
from semmem.stages import code  # noqa: F401
from semmem.stages import taxonomy  # noqa: F401
from semmem.stages import localize  # noqa: F401
from semmem.stages import report  # noqa: F401
from semmem.stages import texts  # noqa: F401
from semmem.stages.registry import REGISTRY, Stage, StageContext, resolve, run_stages, stage

__all__ = ["REGISTRY", "Stage", "StageContext", "resolve", "run_stages", "stage"]
