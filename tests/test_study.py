"""The controlled study: one manifest, several backbones, restartable; its report rebuilt from stored records."""

from __future__ import annotations

import json

import pytest

from llava_swap.cli import main
from llava_swap.study import StudyConfig, run_study

SECTIONS = [
    "## Manifest",
    "## Results: vqa_scene",
    "## Results: seismic_description",
    "## Results: seismic_coordinates",
    "## Instance-level agreement",
    "## Calibration",
    "## Internal representations",
    "## Relevancy",
    "## Structured output",
    "## Ablation effects",
    "## Findings",
]
PLOTS = {"reliability.png", "agreement.png", "cka.png", "relevancy.png", "ablations.png"}


def quick_study(out) -> dict:
    return {
        "name": "quick",
        "output_dir": str(out),
        "train_per_task": 16,
        "test_per_task": 8,
        "pretrain_examples": 16,
        "finetune_examples": 32,
        "analysis_items": 6,
        "relevancy_examples": 2,
        "recipe": {"per_device_train_batch_size": 8},
        "variants": [
            {"name": "llama2", "language_model": "tiny:llama2"},
            {"name": "llama3", "language_model": "tiny:llama3"},
            {"name": "llama3-no-pretrain", "language_model": "tiny:llama3", "pretrain": False},
        ],
        "baseline": "llama3",
        "ablations": {"connector pretraining": "llama3-no-pretrain"},
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "quick"
    status = run_study(StudyConfig.from_dict(quick_study(out)))
    return out, status


def test_study_writes_every_section_plot_and_number(study):
    out, status = study
    assert status == {"llama2": "trained", "llama3": "trained", "llama3-no-pretrain": "trained"}
    report = (out / "report.md").read_text()
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert {p.name for p in (out / "plots").glob("*.png")} == PLOTS
    assert all((out / "plots" / name).stat().st_size > 10_000 for name in PLOTS)
    results = json.loads((out / "results.json").read_text())
    vqa = results["tasks"]["vqa_scene"]
    assert set(vqa["score"]) == {"llama2", "llama3", "llama3-no-pretrain"}
    assert {"estimate", "low", "high"} <= set(vqa["score"]["llama3"])
    assert set(vqa["differences"]) == {"llama2 - llama3", "llama2 - llama3-no-pretrain", "llama3 - llama3-no-pretrain"}
    assert results["comparisons"] == {"family": "every pairwise difference of every task", "size": 9, "method": "Holm"}
    for diff in vqa["differences"].values():  # correct/incorrect items: exact McNemar, Holm never below the raw p
        assert diff["test"] == "exact McNemar" and 1.0 >= diff["p_adjusted"] >= diff["p_value"]
    assert set(vqa["ece_interval"]) == set(vqa["calibration"]) and "item score is at least 0.5" in report
    assert "p = 0.000" not in report and "adjusted p = " in report and "Caveat: one training run" in report
    assert sum(vqa["agreement"]["upset"].values()) == 8
    assert len(vqa["representations"]["stability"]["llama3"]) == 3  # embeddings + 2 layers
    assert vqa["representations"]["measure"] == "debiased linear CKA"
    matched = vqa["representations"]["between_matched_depths"]["llama2 vs llama3"]
    # 8 items: the shuffled baseline is high (about 0.5), which is the point of showing it.
    assert len(matched) == 5 and all(-1 <= cell["baseline_p95"] <= 1 for cell in matched)
    assert len(vqa["representations"]["stability_baseline_p95"]["llama3"]) == 3 and "(shuffled baseline)" in report
    within = vqa["representations"]["within"]["llama2"]
    assert len(within) == 3
    assert all(abs(within[i][i] - 1.0) < 1e-9 for i in range(len(within)))
    assert set(results["ablations"]["connector pretraining"]) == {
        "vqa_scene",
        "seismic_description",
        "seismic_coordinates",
    }
    assert set(results["tasks"]["seismic_coordinates"]["parse_rate"]) == {"llama2", "llama3", "llama3-no-pretrain"}


def test_rerun_reuses_finished_variants_and_gives_the_same_numbers(study):
    out, _ = study
    before = json.loads((out / "results.json").read_text())
    (out / "results.json").unlink()  # so that the comparison below reads a file this rerun wrote
    status = run_study(StudyConfig.from_dict(quick_study(out)))
    assert set(status.values()) == {"reused"}
    after = json.loads((out / "results.json").read_text())
    assert after["tasks"] == before["tasks"] and after.get("ablations") == before.get("ablations")


def test_analyze_rebuilds_the_report_from_records(study, capsys):
    out, _ = study
    expected = json.loads((out / "results.json").read_text())
    (out / "report.md").unlink()
    (out / "results.json").unlink()
    assert main(["analyze", "--study", str(out)]) == 0
    assert (out / "report.md").exists() and "rebuilt from stored records" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["tasks"] == expected["tasks"]


def test_reordering_a_predictions_file_changes_nothing(study, tmp_path):
    """Variants are paired by item id: one variant's predictions.jsonl in another order gives the same analysis."""
    import random
    import shutil

    from llava_swap.records import StudyLayout
    from llava_swap.report import analyse

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    predictions = StudyLayout(copy).task_eval("llama2", "vqa_scene").predictions
    lines = predictions.read_text().splitlines()
    random.Random(0).shuffle(lines)
    predictions.write_text("\n".join(lines) + "\n")
    before, after = analyse(out)["tasks"]["vqa_scene"], analyse(copy)["tasks"]["vqa_scene"]
    for key in ("score", "differences", "agreement", "calibration"):
        assert after[key] == before[key], key


def test_a_changed_entry_retrains_only_that_variant(study, tmp_path):
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = quick_study(copy)
    manifest["variants"][0]["language_model"] = "tiny:llama1"  # the "llama2" slot now holds a LLaMA-1-style LM
    status = run_study(StudyConfig.from_dict(manifest), analyze=False)
    assert status == {"llama2": "trained", "llama3": "reused", "llama3-no-pretrain": "reused"}


def test_manifest_errors():
    with pytest.raises(ValueError, match="at least two variants"):
        StudyConfig.from_dict({"variants": [{"name": "a", "language_model": "tiny:llama3"}]})
    manifest = quick_study("x")
    manifest["ablations"] = {"vision": "llama9"}
    with pytest.raises(ValueError, match="'llama9', which is not a variant"):
        StudyConfig.from_dict(manifest)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['epochs'\]"):
        StudyConfig.from_dict({**quick_study("x"), "epochs": 3})


def test_relevancy_map_has_the_patch_grid_and_a_blind_model_ignores_the_image(built):
    from _helpers import two_turn_messages
    from llava_swap import compat
    from llava_swap.analysis.relevancy import relevancy

    model, processor = built("llama3", "clip")
    inputs = processor.apply_chat_template(
        two_turn_messages()[:1], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    attention_before = compat.attn_implementation(model.language_model)
    assert attention_before != "eager"  # so that restoring it is something the test can see
    seeing = relevancy(model, dict(inputs))
    assert len(seeing["image_map"]) == 4 and all(len(row) == 4 for row in seeing["image_map"])  # 16 patches
    assert seeing["image_share"] > 0.05
    assert seeing["image_share"] + seeing["text_share"] == pytest.approx(1.0)
    # A model whose attention cannot reach the image tokens: all relevance must be on the text.
    blind = dict(inputs)
    blind["attention_mask"] = inputs["attention_mask"].masked_fill(
        inputs["input_ids"] == model.config.image_token_id, 0
    )
    assert relevancy(model, blind)["image_share"] == pytest.approx(0.0, abs=1e-9)
    assert compat.attn_implementation(model.language_model) == attention_before  # eager only while explaining


@pytest.mark.parametrize("name", ["study-back-to-the-barn", "study-llava-gemma"])
def test_real_study_manifests_resolve(name, tmp_path):
    from pathlib import Path

    from llava_swap.study import variant_recipe

    root = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    study = StudyConfig.from_yaml(root / f"{name}.yaml")
    assert study.vision_model == "openai/clip-vit-large-patch14-336"
    data = {"train": tmp_path / "train.json", "pretrain": tmp_path / "pretrain.json"}
    for variant in study.variants:
        recipe = variant_recipe(study, variant, data, tmp_path)
        stages = {stage.stage: stage for stage in recipe.stages}
        assert stages["finetune"].learning_rate == 2e-5 and stages["finetune"].global_batch_size == 128
        assert ("pretrain" in stages) == variant.pretrain
        if variant.pretrain:
            assert stages["pretrain"].learning_rate == 1e-3 and stages["pretrain"].global_batch_size == 256
        assert recipe.model.torch_dtype is None  # fp32 master weights; bf16 comes from autocast (bf16: true)
    if name == "study-llava-gemma":
        assert set(study.ablations) == {"connector pretraining", "vision encoder", "LM size"}


def test_budget_is_counted_in_examples(tmp_path):
    from llava_swap.study import variant_recipe

    study = StudyConfig.from_dict({**quick_study(tmp_path), "pretrain_examples": 100, "finetune_examples": 256})
    study.recipe = {"per_device_train_batch_size": 8, "finetune": {"global_batch_size": 64}}
    data = {"train": tmp_path / "t.json", "pretrain": tmp_path / "p.json"}
    stages = {s.stage: s for s in variant_recipe(study, study.variants[0], data, tmp_path).stages}
    assert stages["pretrain"].max_steps == 13  # ceil(100 / 8)
    assert stages["finetune"].max_steps == 4  # 256 / 64
