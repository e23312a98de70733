"""selfguide-hf: SELF-GUIDE (arXiv 2407.12874) for the Hugging Face stack."""

from selfguide_hf.hub_hook import install as _install_dataset_hook
from selfguide_hf.task import Demonstration, TaskSpec, TaskSpecError

_install_dataset_hook()  # load_dataset("selfguide", ...) resolves to selfguide_hf.builder

__version__ = "0.1.0.dev0"

__all__ = ["Demonstration", "TaskSpec", "TaskSpecError", "__version__"]
