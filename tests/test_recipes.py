"""Recipes: every shipped YAML parses and resolves offline (dry run); overrides and bad fields fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_swap.cli import main
from llava_swap.training import Recipe, StageConfig, accumulation_steps, default_recipe, describe_plan

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
REAL = ["llama1-7b", "llama2-7b", "llama3-8b", "gemma-2b-it", "gemma-7b-it", "gemma-2b-it-dinov2"]
CHECKPOINTS = {
    "llama1-7b": "huggyllama/llama-7b",
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
    "gemma-2b-it": "google/gemma-2b-it",
    "gemma-7b-it": "google/gemma-7b-it",
    "gemma-2b-it-dinov2": "google/gemma-2b-it",
}


@pytest.mark.parametrize("name", REAL)
def test_real_recipe_dry_run(name, capsys):
    recipe = Recipe.from_yaml(CONFIGS / f"{name}.yaml")
    assert recipe.model.language_model == CHECKPOINTS[name]
    assert recipe.model.vision_model == (
        "facebook/dinov2-large" if "dinov2" in name else "openai/clip-vit-large-patch14-336"
    )
    assert (recipe.model.projector, recipe.model.vision_feature_layer) == ("mlp2x_gelu", -2)
    pretrain, finetune = recipe.stages
    # LLaVA-1.5's hyperparameters.
    assert (pretrain.stage, pretrain.language_model, pretrain.learning_rate, pretrain.global_batch_size) == (
        "pretrain",
        "frozen",
        1e-3,
        256,
    )
    assert (finetune.stage, finetune.language_model, finetune.learning_rate, finetune.global_batch_size) == (
        "finetune",
        "full",
        2e-5,
        128,
    )
    for stage in recipe.stages:
        assert (stage.num_train_epochs, stage.lr_scheduler_type, stage.warmup_ratio, stage.weight_decay) == (
            1,
            "cosine",
            0.03,
            0.0,
        )
        assert (stage.bf16, stage.max_length) == (True, 2048)
    assert main(["train", "--config", str(CONFIGS / f"{name}.yaml"), "--dry-run", "--num-processes", "8"]) == 0
    plan = capsys.readouterr().out
    assert CHECKPOINTS[name] in plan
    assert "global batch 256 = 32 x 1 accumulation x 8 process(es)" in plan
    assert "global batch 128 = 16 x 1 accumulation x 8 process(es)" in plan


def test_default_yaml_equals_the_embedded_default():
    assert Recipe.from_yaml(CONFIGS / "default.yaml").to_dict() == default_recipe().to_dict()


def test_accumulation_makes_the_global_batch_exact():
    stage = StageConfig(name="s", per_device_train_batch_size=16, global_batch_size=128)
    assert [accumulation_steps(stage, n) for n in (1, 2, 8)] == [8, 4, 1]
    with pytest.raises(
        ValueError, match="global_batch_size=128 is not a multiple of per_device_train_batch_size=16 x 3"
    ):
        accumulation_steps(stage, 3)
    plan = describe_plan(Recipe.from_yaml(CONFIGS / "llama3-8b.yaml"), 1)
    assert "global batch 256 = 32 x 8 accumulation x 1 process(es)" in plan


def test_overrides_and_errors(tmp_path):
    recipe = default_recipe().with_override("stages.1.learning_rate=1e-4").with_override("model.projector=linear")
    assert recipe.stages[1].learning_rate == 1e-4 and recipe.model.projector == "linear"
    with pytest.raises(ValueError, match=r"stages\[1\]: unknown field 'lr'; a stage takes"):
        default_recipe().with_override("stages.1.lr=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: x\n    stage: pretrain\n    language_model: full\n")
    with pytest.raises(ValueError, match=r"bad.yaml: stages\[0\] \(x\): a pretrain stage trains the projector only"):
        Recipe.from_yaml(bad)
    bad.write_text("stages:\n  - name: x\n    learnig_rate: 1\n")
    with pytest.raises(
        ValueError, match=r"stages\[0\]: unknown field 'learnig_rate' \(did you mean 'learning_rate'\?\)"
    ):
        Recipe.from_yaml(bad)
    bad.write_text("data:\n  on_bad_record: ignore\nstages:\n  - name: x\n")
    with pytest.raises(ValueError, match="on_bad_record='ignore'; use 'error' or 'skip'"):
        Recipe.from_yaml(bad)
    with pytest.raises(FileNotFoundError, match="recipes/configs"):
        Recipe.from_yaml(tmp_path / "missing.yaml")


# Mistakes the recipe refuses when it is read (before anything loads), and what the error says.
BAD_OVERRIDES = {
    "stages.1.per_device_train_batch_size=big": r"per_device_train_batch_size='big': expected an integer",
    "stages.1.max_steps=2.5": r"max_steps=2.5: expected an integer",
    "stages.0.bf16=maybe": r"bf16='maybe': expected true or false",
    "stages.1.learning_rate=fast": r"learning_rate='fast': expected a number",
    "stages.1.max_grad_norm=[1]": r"max_grad_norm=\[1\]: expected a number",
    "stages.1.optim=adamw_turbo": r"stages\[1\] \(stage2-finetune\): adamw_turbo is not a valid OptimizerNames",
    "stages.1.lr_scheduler_type=cosin": r"cosin is not a valid SchedulerType",
    "stages.5.learning_rate=1": r"'stages.5': the recipe has 2 stage\(s\), numbered 0 to 1",
    "stages.x.learning_rate=1": r"'stages.x': the recipe has 2 stage\(s\)",
    "stages.1=3": r"'stages.1' is a stage; set one of its fields",
    "stages.0.output_dir=elsewhere": r"output_dir is set by llava-swap from the recipe's output_dir",
    "stages.0.seed=3": r"seed is set by llava-swap from the recipe's seed",
    "model.projectr=linear": r"'model.projectr' is not a field of the recipe \(did you mean 'projector'\?\)",
    "modle.projector=linear": r"'modle' is not a section of the recipe \(did you mean 'model'\?\)",
    "seed=three": r"seed='three': expected an integer",
    "data.dataset_num_proc=0": r"data.dataset_num_proc=0; use a positive number of processes",
    "stages.1.name=stage1-pretrain": r"stage names \['stage1-pretrain', 'stage1-pretrain'\] repeat",
}


@pytest.mark.parametrize("assignment", sorted(BAD_OVERRIDES))
def test_bad_values_are_refused_when_the_recipe_is_read(assignment):
    with pytest.raises(ValueError, match=BAD_OVERRIDES[assignment]):
        default_recipe().with_override(assignment)


def test_any_sft_config_field_is_a_stage_field(tmp_path):
    """TrainingArguments / SFTConfig fields beyond the named ones: written in the stage, under training_args or by
    --set, they reach the SFTConfig each stage trains with; the named ones keep LLaVA's defaults."""
    from llava_swap.recipes import sft_config

    config = tmp_path / "recipe.yaml"
    config.write_text(
        "stages:\n"
        "  - name: s\n    optim: adafactor\n    max_grad_norm: 0.5\n"
        "    training_args: {run_name: mine, lr_scheduler_kwargs: {min_lr: 0.0}, warmup_steps: 3}\n"
    )
    recipe = Recipe.from_yaml(config).with_override("stages.0.adam_beta2=0.95")
    stage = recipe.stages[0]
    assert stage.training_args == {
        "optim": "adafactor",
        "max_grad_norm": 0.5,
        "run_name": "mine",
        "lr_scheduler_kwargs": {"min_lr": 0.0},
        "warmup_steps": 3,
        "adam_beta2": 0.95,
    }
    args = sft_config(stage, recipe, use_cpu=True)
    assert (args.optim, args.max_grad_norm, args.run_name, args.adam_beta2, args.warmup_steps) == (
        "adafactor",
        0.5,
        "mine",
        0.95,
        3,
    )
    assert (args.learning_rate, args.per_device_train_batch_size, args.output_dir) == (
        2e-5,
        16,
        str(Path(recipe.output_dir) / "s"),
    )
    # Round trip: the resolved recipe (as train_summary.json records it) reads back the same.
    assert Recipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()


def test_qlora_needs_a_gpu_and_says_so_before_training(tmp_path):
    import torch

    from llava_swap.training import run_recipe

    recipe = default_recipe().with_override("stages.1.language_model=qlora").with_override(f"output_dir={tmp_path}")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="language_model: qlora.*no CUDA GPU or no bitsandbytes"):
        run_recipe(recipe)
    assert not (tmp_path / "stage1-pretrain").exists()  # refused before any training


def test_the_readme_stage_example_is_a_valid_recipe():
    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("**A stage is an `SFTConfig`.**")[1].split("```yaml")[1].split("```")[0]
    (stage,) = Recipe.from_dict(yaml.safe_load(example)).stages
    assert (stage.language_model, stage.learning_rate) == ("lora", 2e-4)
    assert stage.training_args["optim"] == "adamw_torch_fused" and stage.training_args["eval_strategy"] == "no"
