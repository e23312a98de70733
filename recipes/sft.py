"""SELF-GUIDE finetuning: synthesize task data with the model itself, then SFT on it.

    accelerate launch recipes/sft.py --config recipes/configs/smollm2-135m_lora_cpu.yaml --task task199

Arguments are `selfguide_hf.recipe_args.SelfGuideArguments` + TRL `SFTConfig` +
TRL `ModelConfig`; a YAML file given with --config sets defaults and
command-line flags override it. The run itself is `selfguide_hf.pipeline`,
the same orchestrator `selfguide run` uses (with --evaluate, the same report).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from selfguide_hf import pipeline
from selfguide_hf.distributed import end_processes
from selfguide_hf.recipe_args import parse_recipe_args

logger = logging.getLogger("selfguide.sft")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sg_args, training_args, model_args = parse_recipe_args(argv)
    run = pipeline.prepare_run(sg_args, training_args, model_args, argv)
    pipeline.run_all(run)
    if run.is_main_process:
        logger.info("adapter and model card in %s", run.output_dir)
    end_processes()
    return 0


def cli() -> int:
    """Entry point that turns a user's mistake into one clear line instead of a traceback."""
    from selfguide_hf.evaluation import EvalDataError
    from selfguide_hf.hub import HubPushError
    from selfguide_hf.methods import TrainingConfigError
    from selfguide_hf.synthesis import SynthesisError
    from selfguide_hf.task import TaskSpecError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return main()
    except (TrainingConfigError, TaskSpecError, EvalDataError) as exc:  # what the user gave
        print(f"error: {exc}", file=sys.stderr)
        end_processes(wait=False)
        return 2
    except (SynthesisError, HubPushError) as exc:  # what the run met: no data survived, the Hub refused
        print(f"error: {exc}", file=sys.stderr)
        end_processes(wait=False)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
