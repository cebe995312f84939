"""The two-stage recipe on TRL's SFTTrainer: stages and freezing, LoRA, bad records, DDP on CPU, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llava_swap import LlavaSwapForCausalLM
from llava_swap.training import Recipe, default_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"train_runtime", "samples_per_second", "final_loss", "trainable_parameters", "eval_before", "eval"}


def short_recipe(out: Path, finetune: dict | None = None, **data) -> dict:
    """The default recipe, shrunk to seconds: a few synthetic items and steps."""
    recipe = default_recipe().to_dict()
    recipe["output_dir"] = str(out)
    recipe["report_to"] = []
    recipe["data"].update(synthetic_train=48, synthetic_test=16, **data)
    recipe["stages"][0].update(max_steps=2, per_device_train_batch_size=8, logging_steps=1)
    recipe["stages"][1].update(max_steps=4, per_device_train_batch_size=8, logging_steps=1, **(finetune or {}))
    return recipe


def test_two_stages_freeze_what_they_say(tmp_path):
    # SFTConfig fields the recipe schema does not name reach the trainer (and its saved training_args.bin).
    extra = {"optim": "adafactor", "max_grad_norm": 0.5, "lr_scheduler_type": "constant"}
    summary = run_recipe(Recipe.from_dict(short_recipe(tmp_path / "run", finetune=extra)))
    out = tmp_path / "run"
    saved = torch.load(out / "stage2-finetune" / "final" / "training_args.bin", weights_only=False)
    assert (saved.optim, saved.max_grad_norm, saved.lr_scheduler_type) == ("adafactor", 0.5, "constant")
    assert set(json.loads((out / "train_summary.json").read_text())) >= SUMMARY_KEYS
    assert summary.trainable_parameters["stage1-pretrain"]["language_model"] == 0
    assert summary.trainable_parameters["stage1-pretrain"]["vision_tower"] == 0
    assert summary.trainable_parameters["stage1-pretrain"]["projector"] > 0
    assert summary.trainable_parameters["stage2-finetune"]["language_model"] > 0
    assert summary.trainable_parameters["stage2-finetune"]["vision_tower"] == 0
    assert {"accuracy", "n", "calibration", "by_question_type"} <= set(summary.eval) and summary.eval["n"] == 16

    def weights(path):
        return LlavaSwapForCausalLM.from_pretrained(path).state_dict()

    stage1, stage2, final = (
        weights(out / "stage1-pretrain" / "final"),
        weights(out / "stage2-finetune" / "final"),
        weights(out),
    )
    changed = {key for key in stage1 if not torch.equal(stage1[key], stage2[key])}
    assert changed and all("vision_tower" not in key for key in changed)  # stage 2 never touched the encoder
    assert any("language_model" in key for key in changed)
    assert all(torch.equal(final[key], stage2[key]) for key in final)
    assert LlavaSwapForCausalLM.from_pretrained(out).config.llm_family == "llama3"


def test_stage1_trains_the_projector_only(tmp_path):
    recipe = short_recipe(tmp_path / "run")
    recipe["stages"] = recipe["stages"][:1]
    run_recipe(Recipe.from_dict(recipe))
    from llava_swap import build_vlm

    out = tmp_path / "run"
    initial, _ = build_vlm(out / "backbones" / "llama3", out / "backbones" / "clip", seed=0)
    trained = LlavaSwapForCausalLM.from_pretrained(out).state_dict()
    for key, value in initial.state_dict().items():
        same = torch.equal(trained[key], value)
        assert same == ("multi_modal_projector" not in key), key


def test_lora_targets_the_language_model_only_and_merges(tmp_path):
    recipe = short_recipe(tmp_path / "run", finetune={"language_model": "lora", "lora_r": 4, "lora_alpha": 8})
    summary = run_recipe(Recipe.from_dict(recipe))
    counts = summary.trainable_parameters["stage2-finetune"]
    assert counts["vision_tower"] == 0 and 0 < counts["language_model"] < 60_000  # adapters, not the whole LLM
    model = LlavaSwapForCausalLM.from_pretrained(tmp_path / "run")
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged into plain weights
    final, stage1 = (
        model.state_dict(),
        LlavaSwapForCausalLM.from_pretrained(tmp_path / "run" / "stage1-pretrain" / "final").state_dict(),
    )
    language = [key for key in final if key.startswith("model.language_model.")]
    adapted = [key for key in language if key.endswith(("q_proj.weight", "v_proj.weight", "down_proj.weight"))]
    # merged, not dropped: the adapted linear layers moved; embeddings and norms (no adapters) did not
    assert adapted and all(not torch.equal(final[key], stage1[key]) for key in adapted)
    assert all(torch.equal(final[key], stage1[key]) for key in language if "norm" in key or "embed_tokens" in key)


def _bad_llava_json(root: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(root / "ok.png")
    records = [
        {
            "id": "good",
            "image": "ok.png",
            "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
        },
        {
            "id": "missing-image",
            "image": "nope.png",
            "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
        },
        {
            "id": "two-markers",
            "image": "ok.png",
            "conversations": [{"from": "human", "value": "<image><image>\nColour?"}, {"from": "gpt", "value": "red"}],
        },
        {
            "id": "too-long",
            "image": "ok.png",
            "conversations": [
                {"from": "human", "value": "<image>\n" + "Colour? " * 300},
                {"from": "gpt", "value": "red"},
            ],
        },
    ]
    path = root / "train.json"
    path.write_text(json.dumps(records))
    return path


def test_bad_records_stop_the_run_or_are_skipped_and_listed(tmp_path):
    data = _bad_llava_json(tmp_path)
    recipe = short_recipe(tmp_path / "run", train=str(data), pretrain=str(data), eval=str(data))
    recipe["data"]["task"] = None  # plain LLaVA data, scored by exact match
    with pytest.raises(ValueError, match=r"record 'missing-image' in .*train.json"):
        run_recipe(Recipe.from_dict(recipe))
    recipe["data"]["on_bad_record"] = "skip"
    summary = run_recipe(Recipe.from_dict(recipe))
    skipped = json.loads((tmp_path / "run" / "skipped_records.json").read_text())
    assert sorted({item["id"] for item in skipped}) == ["missing-image", "too-long", "two-markers"]
    too_long = [item for item in skipped if item["id"] == "too-long"]
    assert {item["split"] for item in too_long} == {"train", "pretrain"}  # the splits that train, at max_length 256
    assert "no token would be supervised after truncation" in too_long[0]["problem"]
    assert summary.skipped_records == {"train": 3, "pretrain": 3, "eval": 2}
    assert summary.eval["n"] == 2  # evaluation generates, so length limits do not apply


def test_a_sample_truncated_to_nothing_is_refused(tmp_path):
    recipe = short_recipe(tmp_path / "run")
    recipe["stages"][1]["max_length"] = 20  # shorter than the 16 image tokens + prompt
    with pytest.raises(ValueError, match=r"record 'vqa-train-\d+'.*truncation to max_length=20"):
        run_recipe(Recipe.from_dict(recipe))


def test_a_folder_with_a_run_is_never_trained_over_by_accident(tmp_path, capsys):
    """Training again into a finished run is refused; --overwrite_output_dir replaces it (no stale folders);
    resuming it with another recipe is refused, naming the field, unless the change is allowed and recorded."""
    from llava_swap.cli import main
    from llava_swap.hub import write_card

    recipe = short_recipe(tmp_path / "run")
    run_recipe(Recipe.from_dict(recipe))
    out = tmp_path / "run"
    with pytest.raises(FileExistsError, match=r"already holds a training run.*--resume_from_checkpoint.*--overwrite"):
        run_recipe(Recipe.from_dict(recipe))
    config = _write(recipe, tmp_path / "recipe.yaml")
    capsys.readouterr()
    assert main(["train", "--config", str(config)]) == 2  # the same, at the command line: one line, exit 2
    error = capsys.readouterr().err
    assert error.startswith("llava-swap: error: output_dir") and error.count("\n") == 1

    changed = {**recipe, "stages": [recipe["stages"][0], {**recipe["stages"][1], "learning_rate": 1e-4}]}
    with pytest.raises(ValueError, match=r"another recipe.*stages\.1\.learning_rate: 0\.002 -> 0\.0001"):
        run_recipe(Recipe.from_dict(changed), resume_from_checkpoint=True)
    summary = run_recipe(Recipe.from_dict(changed), resume_from_checkpoint=True, allow_recipe_change=True)
    assert summary.recipe_changes == [{"field": "stages.1.learning_rate", "was": 0.002, "now": 0.0001}]
    assert "`stages.1.learning_rate` 0.002 -> 0.0001" in write_card(out).read_text()

    stale = out / "eval" / "stale.txt"
    stale.write_text("from the first run")
    summary = run_recipe(Recipe.from_dict(changed), overwrite_output_dir=True)
    assert not stale.exists() and summary.recipe_changes == []
    assert json.loads((out / "recipe.json").read_text())["stages"][1]["learning_rate"] == 1e-4
    with pytest.raises(ValueError, match="choose one"):
        run_recipe(Recipe.from_dict(changed), resume_from_checkpoint=True, overwrite_output_dir=True)


# ---------------------------------------------------------------------------------------------------------------------
# Processes: DDP on CPU, SIGKILL and resume.


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _write(recipe: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    config = _write(short_recipe(tmp_path / "ddp"), tmp_path / "ddp.yaml")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "sft.py"), "--config", str(config),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    for stage in summary["stages"].values():
        assert stage["world_size"] == 2
        assert stage["train_samples_seen"] == stage["global_step"] * 8 * 2  # both ranks fed batches every step
    assert result.stdout.count("trainable parameters") == 2  # once per stage: the main process reports, not each rank
    assert result.stdout.count("outputs in ") == 1
    assert len(list((tmp_path / "ddp").glob("*.safetensors"))) == 1
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    # Both ranks encoded their share of the 48 distinct images: each exactly once in all, none again in stage 2.
    assert "vision feature cache: on (auto: the frozen encoder would see the images 2 times)" in result.stdout
    encoded = [stage["vision_feature_cache"]["encoded"] for stage in summary["stages"].values()]
    assert encoded == [48, 0]
    LlavaSwapForCausalLM.from_pretrained(tmp_path / "ddp")


def _resumable_recipe(out: Path) -> dict:
    value = short_recipe(out)
    value["stages"][1].update(max_steps=8, save_steps=2, save_total_limit=None)
    return value


SFT = [sys.executable, str(ROOT / "recipes" / "sft.py"), "--config"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of `_resumable_recipe` run without interruption."""
    root = tmp_path_factory.mktemp("reference")
    config = _write(_resumable_recipe(root / "run"), root / "reference.yaml")
    assert subprocess.run([*SFT, str(config)], capture_output=True, env=_env(), timeout=600).returncode == 0
    return load_file(root / "run" / "model.safetensors")


def _assert_same_weights(expected: dict[str, torch.Tensor], folder: Path) -> None:
    resumed = load_file(folder / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert max((expected[k].float() - resumed[k].float()).abs().max().item() for k in expected) <= 1e-6


def _start_and_wait_for(config: Path, checkpoint: Path, **popen) -> subprocess.Popen:
    process = subprocess.Popen([*SFT, str(config)], env=_env(), **popen)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (checkpoint / "checkpoint_complete.json").exists():
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    return process


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, uninterrupted):
    config = _write(_resumable_recipe(tmp_path / "killed"), tmp_path / "killed.yaml")
    stage_dir = tmp_path / "killed" / "stage2-finetune"
    process = _start_and_wait_for(
        config, stage_dir / "checkpoint-4", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "train_summary.json").exists()
    # A checkpoint folder cut short by a kill during a save: it must be ignored, not resumed from.
    partial = stage_dir / "checkpoint-7"
    partial.mkdir(exist_ok=True)
    (partial / "model.safetensors").write_bytes(b"truncated")

    result = subprocess.run(
        [*SFT, str(config), "--resume_from_checkpoint"], capture_output=True, text=True, env=_env(), timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ignoring" in result.stdout and "checkpoint-7" in result.stdout
    summary = json.loads((tmp_path / "killed" / "train_summary.json").read_text())
    resumed_from = summary["stages"]["stage2-finetune"]["resumed_from"]
    assert resumed_from is not None and Path(resumed_from).name.startswith("checkpoint-")
    _assert_same_weights(uninterrupted, tmp_path / "killed")


@pytest.mark.slow
def test_ctrl_c_stops_after_a_step_and_says_how_to_resume(tmp_path, uninterrupted):
    """SIGINT: the current step finishes, a checkpoint is saved, exit 130 with the exact resume command; running
    that command finishes with the weights of an uninterrupted run."""
    import shlex

    config = _write(_resumable_recipe(tmp_path / "stopped"), tmp_path / "stopped.yaml")
    stage_dir = tmp_path / "stopped" / "stage2-finetune"
    process = _start_and_wait_for(
        config, stage_dir / "checkpoint-2", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-4000:]
    assert "Traceback" not in stderr
    stopped_at = next(line for line in stderr.splitlines() if "stopped by Ctrl-C" in line)
    checkpoint = Path(stopped_at.split("(checkpoint ")[1].rstrip(").").strip())
    assert checkpoint.parent == stage_dir and (checkpoint / "checkpoint_complete.json").exists()
    assert not (stage_dir / "final").exists() and not (tmp_path / "stopped" / "train_summary.json").exists()

    command = shlex.split(stderr.split("resume with:")[1].strip().splitlines()[0])
    assert command[:3] == ["accelerate", "launch", str(ROOT / "recipes" / "sft.py")]
    assert command[3:] == ["--config", str(config), "--resume_from_checkpoint"]
    resumed = subprocess.run([sys.executable, *command[2:]], capture_output=True, text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = json.loads((tmp_path / "stopped" / "train_summary.json").read_text())
    assert summary["stages"]["stage2-finetune"]["resumed_from"] == str(checkpoint)
    _assert_same_weights(uninterrupted, tmp_path / "stopped")


@pytest.mark.slow
def test_the_default_recipe_learns(tmp_path):
    """The README's main job, as written: `accelerate launch recipes/sft.py`, in a fresh directory."""
    command = [sys.executable, "-m", "accelerate.commands.launch", str(ROOT / "recipes" / "sft.py")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "outputs" / "default"
    summary = json.loads((out / "train_summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert set(summary["trainable_parameters"]) == {"stage1-pretrain", "stage2-finetune"}
    # Chance is below 1/3 (5+ colours, 3 shapes); the untrained model answers nothing right.
    assert summary["eval"]["accuracy"] >= 0.5 > summary["eval_before"]["accuracy"]
    assert "accuracy before training" in result.stdout and str(out.relative_to(tmp_path)) in result.stdout
    assert list(out.glob("stage2-finetune/runs/*/events.out.tfevents.*"))  # TensorBoard logs
    LlavaSwapForCausalLM.from_pretrained(out)


@pytest.mark.parametrize("language_model", ["full", "lora"])
def test_stage_killed_while_writing_final_takes_its_last_checkpoint(tmp_path, language_model):
    """Every step done and checkpointed, final/ not written: resume loads that checkpoint and trains nothing more."""
    finetune = {"language_model": language_model, "save_steps": 4}
    if language_model == "lora":
        finetune.update(lora_r=4, lora_alpha=8)
    recipe = Recipe.from_dict(short_recipe(tmp_path / "run", finetune=finetune))
    run_recipe(recipe)
    stage_dir = tmp_path / "run" / "stage2-finetune"
    expected = load_file(stage_dir / "final" / "model.safetensors")
    shutil.rmtree(stage_dir / "final")
    summary = run_recipe(recipe, resume_from_checkpoint=True)
    stage = summary.stages["stage2-finetune"]
    assert Path(stage.resumed_from).name == "checkpoint-4" and stage.global_step == 4
    assert stage.train_runtime == 0.0  # not one more step
    resumed = load_file(stage_dir / "final" / "model.safetensors")
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[key], expected[key]) for key in expected)


def test_init_from_a_stage1_output_and_hf_dataset_input(tmp_path):
    """Stage 2 started from a saved stage-1 model, on data given as a saved Hugging Face dataset."""
    from datasets import Dataset
    from PIL import Image

    from llava_swap.data import load_llava_json

    first = short_recipe(tmp_path / "stage1")
    first["stages"] = first["stages"][:1]
    run_recipe(Recipe.from_dict(first))
    stage1 = LlavaSwapForCausalLM.from_pretrained(tmp_path / "stage1").state_dict()

    records = load_llava_json(tmp_path / "stage1" / "data" / "train.json").records[:24]
    rows = [{"id": r.id, "images": [Image.open(r.images[0]).convert("RGB")], "messages": r.messages} for r in records]
    Dataset.from_list(rows).save_to_disk(tmp_path / "hf-train")

    second = short_recipe(tmp_path / "stage2", train=str(tmp_path / "hf-train"))
    second["stages"] = second["stages"][1:]
    second["model"]["init_from"] = str(tmp_path / "stage1")
    summary = run_recipe(Recipe.from_dict(second))
    assert summary.stages["stage2-finetune"].global_step == 4  # max_steps, over 24 rows in batches of 8
    final = LlavaSwapForCausalLM.from_pretrained(tmp_path / "stage2").state_dict()
    # The vision tower is stage 1's, untouched; the projector went on training from stage 1's weights.
    assert all(torch.equal(final[k], stage1[k]) for k in stage1 if "vision_tower" in k)
    assert not torch.equal(
        final["model.multi_modal_projector.linear_1.weight"], stage1["model.multi_modal_projector.linear_1.weight"]
    )
    # And it started there: the same stage with a learning rate of 0 ends exactly on stage 1's weights.
    frozen = {**second, "output_dir": str(tmp_path / "stage2-lr0")}
    frozen["stages"] = [{**second["stages"][0], "learning_rate": 0.0}]
    run_recipe(Recipe.from_dict(frozen))
    unchanged = LlavaSwapForCausalLM.from_pretrained(tmp_path / "stage2-lr0").state_dict()
    assert unchanged.keys() == stage1.keys() and all(torch.equal(unchanged[k], stage1[k]) for k in stage1)
