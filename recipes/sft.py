"""LLaVA's two-stage finetuning (projector pretraining, then instruction tuning) on TRL's SFTTrainer.

    accelerate launch recipes/sft.py                                         # tiny offline default, CPU, minutes
    accelerate launch recipes/sft.py --config recipes/configs/llama3-8b.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/sft.py --config ...
    accelerate launch recipes/sft.py --config ... --resume_from_checkpoint   # after an interruption
    python recipes/sft.py --config ... --dry-run                             # print the resolved plan

The same as `llava-swap train`. Recipes are YAML files of `llava_swap.training.Recipe`: model, data, stages.
"""

import sys

from llava_swap_cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
