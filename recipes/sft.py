"""SELF-GUIDE finetuning: synthesize task data with the model itself, then SFT on it.

    accelerate launch recipes/sft.py --config recipes/configs/smollm2-135m_lora_cpu.yaml --task task199

The settings are `selfguide_hf.settings.SelfGuideArguments` + TRL `SFTConfig` +
TRL `ModelConfig`; a YAML file given with --config sets them and flags
override it. The run itself is `selfguide_hf.pipeline`, the orchestrator
`selfguide run` uses (with --evaluate true, the same report). `selfguide run
--config` takes the same files.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from selfguide_hf import pipeline
from selfguide_hf.settings_parser import parse_settings

logger = logging.getLogger("selfguide.sft")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run = pipeline.prepare_run(*parse_settings(argv, front="recipe"), argv)
    pipeline.run_all(run)
    if run.is_main_process:
        logger.info("adapter and model card in %s", run.output_dir)
    pipeline.end_processes()
    return 0


def cli() -> int:
    """Entry point: an error is one line and the exit code of `selfguide_hf.errors.EXIT_CODES`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return main()
    except Exception as exc:
        return pipeline.error_exit(exc)


if __name__ == "__main__":
    sys.exit(cli())
