"""SELF-GUIDE finetuning: synthesize task data with the model itself, then SFT on it.

    accelerate launch recipes/sft.py --config recipes/configs/smollm2-135m_lora_cpu.yaml --task task199

Arguments are `selfguide_hf.training.SelfGuideArguments` + TRL `SFTConfig` + TRL
`ModelConfig`; a YAML file given with --config sets defaults and command-line
flags override it. Every step is a library call (selfguide_hf.training), so the
recipe stays a wiring diagram.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from selfguide_hf import training

logger = logging.getLogger("selfguide.sft")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sg_args, training_args, model_args = training.parse_recipe_args(argv)
    run = training.prepare_run(sg_args, training_args, model_args, argv)
    data = training.build_synthetic_dataset(run)  # all processes: the builder splits generation
    result = training.train_adapter(run, data)
    if sg_args.evaluate:
        training.evaluate_run(run, result)
    card = training.write_run_outputs(run, data, result)
    if run.is_main_process:
        logger.info("adapter and model card in %s", card.parent)
    if url := training.push_run_dataset(run, data):
        logger.info("dataset pushed: %s", url)
    if url := training.push_run_adapter(run, data, result):
        logger.info("adapter pushed: %s", url)
    run.training_args.distributed_state.wait_for_everyone()
    return 0


def cli() -> int:
    """Entry point that turns a user's mistake into one clear line instead of a traceback."""
    from selfguide_hf.evaluation import EvalDataError
    from selfguide_hf.synthesis import SynthesisError
    from selfguide_hf.task import TaskSpecError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return main()
    except (training.TrainingConfigError, TaskSpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (SynthesisError, EvalDataError) as exc:  # the data, not the arguments
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
