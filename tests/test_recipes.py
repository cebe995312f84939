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
    with pytest.raises(ValueError, match="'stages.1.lr' is not a field"):
        default_recipe().with_override("stages.1.lr=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: x\n    stage: pretrain\n    language_model: full\n")
    with pytest.raises(ValueError, match=r"bad.yaml: stages\[0\] \(x\): a pretrain stage trains the projector only"):
        Recipe.from_yaml(bad)
    bad.write_text("stages:\n  - name: x\n    learnig_rate: 1\n")
    with pytest.raises(ValueError, match=r"stages\[0\]: unknown field\(s\) \['learnig_rate'\]"):
        Recipe.from_yaml(bad)
    bad.write_text("data:\n  on_bad_record: ignore\nstages:\n  - name: x\n")
    with pytest.raises(ValueError, match="on_bad_record='ignore'; use 'error' or 'skip'"):
        Recipe.from_yaml(bad)
    with pytest.raises(FileNotFoundError, match="recipes/configs"):
        Recipe.from_yaml(tmp_path / "missing.yaml")


def test_qlora_needs_a_gpu_and_says_so_before_training(tmp_path):
    import torch

    from llava_swap.training import run_recipe

    recipe = default_recipe().with_override("stages.1.language_model=qlora").with_override(f"output_dir={tmp_path}")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="language_model: qlora.*no CUDA GPU or no bitsandbytes"):
        run_recipe(recipe)
    assert not (tmp_path / "stage1-pretrain").exists()  # refused before any training
