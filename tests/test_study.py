"""The controlled study: one manifest, several backbones, each trained with several seeds, restartable; its report
rebuilt from stored records, with findings only where every seed agrees."""

from __future__ import annotations

import json

import pytest
import yaml

from llava_swap.cli import main
from llava_swap.study import StudyConfig, run_study

SECTIONS = [
    "## Manifest",
    "## Results: vqa_scene",
    "## Results: seismic_description",
    "## Results: seismic_coordinates",
    "## Chance level",
    "## Instance-level agreement",
    "## Calibration",
    "## Internal representations",
    "## Image dependence",
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
        "vision_model": "tiny:clip",  # the untrained one: the pretrained encoder has tests of its own
        "seeds": [0, 1],
        "data_seed": 0,
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


VARIANTS = {"llama2", "llama3", "llama3-no-pretrain"}
PAIRS = {"llama2 - llama3", "llama2 - llama3-no-pretrain", "llama3 - llama3-no-pretrain"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "quick"
    status = run_study(StudyConfig.from_dict(quick_study(out)))
    return out, status


def test_study_trains_every_variant_with_every_seed_in_its_own_folder(study):
    from llava_swap.records import StudyLayout

    out, status = study
    assert status == {name: {0: "trained", 1: "trained"} for name in ("llama2", "llama3", "llama3-no-pretrain")}
    layout = StudyLayout(out)
    for name in VARIANTS:
        assert sorted(path.name for path in layout.variant_root(name).iterdir()) == ["seed-0", "seed-1"]
        for seed in (0, 1):
            done = json.loads((layout.variant(name, seed) / "variant.json").read_text())
            assert done["seed"] == seed and done["train"]["recipe"]["seed"] == seed
            assert layout.task_eval(name, "vqa_scene", seed).predictions.exists()
    # One set of data for both seeds: the runs differ in their training seed only.
    assert json.loads(layout.manifest.read_text())["data_seed"] == 0
    assert len(list(layout.data.glob("*/test.json"))) == 3
    first, second = (layout.task_eval("llama3", "vqa_scene", seed).predictions.read_text() for seed in (0, 1))
    assert [json.loads(line)["id"] for line in first.splitlines()] == [
        json.loads(line)["id"] for line in second.splitlines()
    ]


def test_study_writes_every_section_plot_and_number(study):
    out, _ = study
    report = (out / "report.md").read_text()
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert {p.name for p in (out / "plots").glob("*.png")} == PLOTS
    assert all((out / "plots" / name).stat().st_size > 10_000 for name in PLOTS)
    manifest = json.loads((out / "manifest.json").read_text())  # numbers resolved per task, as the report states
    tasks = ("vqa_scene", "seismic_description", "seismic_coordinates")
    assert (manifest["train_per_task"], manifest["test_per_task"]) == ({t: 16 for t in tasks}, {t: 8 for t in tasks})
    assert "training items 16 (vqa_scene) / 16 (seismic_description)" in report
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    task = results["tasks"]["vqa_scene"]
    assert set(task["per_seed"]) == {"0", "1"}
    vqa = task["per_seed"]["0"]
    assert set(vqa["score"]) == VARIANTS
    assert {"estimate", "low", "high"} <= set(vqa["score"]["llama3"])
    assert set(vqa["differences"]) == PAIRS
    # One Holm family: 3 pairs x 3 tasks x 2 seeds.
    assert {key: results["comparisons"][key] for key in ("size", "pairs", "tasks", "seeds", "method")} == {
        "size": 18,
        "pairs": 3,
        "tasks": 3,
        "seeds": 2,
        "method": "Holm",
    }
    for seed in ("0", "1"):
        for diff in task["per_seed"][seed]["differences"].values():  # 0/1 items: exact McNemar, Holm >= raw p
            assert diff["test"] == "exact McNemar" and 1.0 >= diff["p_adjusted"] >= diff["p_value"]
    assert set(vqa["ece_interval"]) == set(vqa["calibration"]) and "item score is at least 0.5" in report
    assert "p = 0.000" not in report and "adjusted p per seed" in report and "Holm-adjusted p = " in report
    assert "Caveat: one training run" not in report  # two seeds
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
    tasks = {"vqa_scene", "seismic_description", "seismic_coordinates"}
    ablations = results["ablations"]
    assert set(ablations["per_seed"]) == {"0", "1"}
    assert set(ablations["per_seed"]["1"]["connector pretraining"]) == tasks
    assert ablations["comparisons"]["size"] == 6  # 1 factor x 3 tasks x 2 seeds
    assert set(ablations["across_seeds"]["connector pretraining"]) == tasks
    assert set(results["tasks"]["seismic_coordinates"]["per_seed"]["1"]["parse_rate"]) == VARIANTS


def test_results_summarise_every_statistic_over_seeds(study):
    import statistics

    out, _ = study
    results = json.loads((out / "results.json").read_text())
    task = results["tasks"]["vqa_scene"]
    across = task["across_seeds"]
    per_seed = [task["per_seed"][seed]["score"]["llama3"]["estimate"] for seed in ("0", "1")]
    score = across["score"]["llama3"]
    assert score["per_seed"] == {"0": per_seed[0], "1": per_seed[1]} and score["n"] == 2
    assert score["mean"] == pytest.approx(statistics.fmean(per_seed))
    assert score["sd"] == pytest.approx(statistics.stdev(per_seed))
    assert (score["min"], score["max"]) == (min(per_seed), max(per_seed))
    difference = across["differences"]["llama2 - llama3"]
    assert set(difference["per_seed"]) == {"0", "1"} and difference["consistency"]["seeds"] == ["0", "1"]
    assert isinstance(difference["consistency"]["holds"], bool)
    assert set(across["kappa"]) == {"llama2 vs llama3", "llama2 vs llama3-no-pretrain", "llama3 vs llama3-no-pretrain"}
    for key in ("ece", "adaptive_ece", "brier", "image_share"):
        assert set(across[key]) == VARIANTS and set(across[key]["llama2"]["per_seed"]) == {"0", "1"}, key
    assert len(across["stability"]["llama3"]) == 3 and len(across["cka_matched"]["llama2 vs llama3"]) == 5
    assert set(results["tasks"]["seismic_coordinates"]["across_seeds"]["parse_rate"]) == VARIANTS
    report = (out / "report.md").read_text()
    assert (
        "score per seed (0 / 1) [95% CI over items]" in report and "mean over seeds (between-seed SD, range)" in report
    )
    assert "all 18 differences of the study (3 pairs x 3 tasks x 2 seeds)" in report
    assert f"(SD {score['sd']:.3f}, range {score['min']:.3f} to {score['max']:.3f})" in report
    assert "Plots: training seed 0, the first of the study's 2" in report


def test_rerun_reuses_finished_variants_and_gives_the_same_numbers(study):
    out, _ = study
    before = json.loads((out / "results.json").read_text())
    (out / "results.json").unlink()  # so that the comparison below reads a file this rerun wrote
    status = run_study(StudyConfig.from_dict(quick_study(out)))
    assert {state for by_seed in status.values() for state in by_seed.values()} == {"reused"}
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


def test_plan_prints_one_command_per_run_and_the_merge(tmp_path, capsys):
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump(quick_study(tmp_path / "out")))
    assert main(["study", "--config", str(config), "--out", str(tmp_path / "out"), "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    runs = [f"{name}@{seed}" for seed in (0, 1) for name in ("llama2", "llama3", "llama3-no-pretrain")]
    assert lines == [f"llava-swap study --config {config} --out {tmp_path / 'out'} --only {run}" for run in runs] + [
        f"llava-swap analyze --study {tmp_path / 'out'}"
    ]
    assert not (tmp_path / "out").exists()  # a plan does no work
    assert main(["study", "--plan", "--seeds", "3", "--out", "o"]) == 0
    assert "llava-swap study --out o --seeds 3 --only gemma@3" in capsys.readouterr().out


def test_only_jobs_then_analyze_reproduce_the_single_process_results(study, tmp_path, capsys):
    """A run done alone (`--only`, as on another machine) and merged by `analyze` gives the study's results.json."""
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("results.json", "report.md"):
        (copy / name).unlink()
    shutil.rmtree(copy / "variants" / "llama3" / "seed-1")
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump(quick_study(copy)))
    assert main(["study", "--config", str(config), "--only", "llama3@1"]) == 0
    said = capsys.readouterr().out
    assert "runs: llama3 seed 1 trained" in said and f"llava-swap analyze --study {copy}" in said
    assert not (copy / "report.md").exists()  # one job never writes the report
    assert main(["analyze", "--study", str(copy)]) == 0
    expected = json.loads((out / "results.json").read_text())
    merged = json.loads((copy / "results.json").read_text())
    assert merged["tasks"] == expected["tasks"]
    assert (merged["comparisons"], merged["ablations"], merged["missing"]) == (
        expected["comparisons"],
        expected["ablations"],
        [],
    )


def test_analyze_covers_the_complete_seeds_and_names_missing_runs(study, tmp_path, capsys):
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "variants" / "llama3" / "seed-1" / "variant.json").unlink()  # a job still running
    assert main(["analyze", "--study", str(copy)]) == 0
    results = json.loads((copy / "results.json").read_text())
    assert (results["seeds"], results["missing"]) == ([0], ["llama3@1"])
    assert results["comparisons"]["size"] == 9  # 3 pairs x 3 tasks x 1 seed
    assert "**Partial:** runs not finished yet, left out with their seeds: llama3@1" in (copy / "report.md").read_text()
    (copy / "variants" / "llama2" / "seed-0" / "variant.json").unlink()
    assert main(["analyze", "--study", str(copy)]) == 2
    assert "no training seed has every run finished (missing: llama2@0, llama3@1)" in capsys.readouterr().err


def test_analyze_refuses_runs_evaluated_with_other_settings(study, tmp_path, capsys):
    """A merged report never mixes runs evaluated differently: a manifest whose analysis settings changed since the
    runs were evaluated (a job started from an older manifest, say) is refused, naming the runs."""
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "relevancy_examples": 1}))
    assert main(["analyze", "--study", str(copy)]) == 2
    error = capsys.readouterr().err
    assert "runs llama2@0, llama3@0, llama3-no-pretrain@0, llama2@1" in error
    assert "with other analysis settings than the manifest's" in error


def test_only_names_a_run_of_the_study(tmp_path, capsys):
    assert main(["study", "--only", "llama9@0", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "--only llama9@0: no such run in this study; its runs are llama2@0, llama3@0, gemma@0" in error
    assert not (tmp_path / "o").exists()


def test_data_are_generated_once_for_jobs_sharing_a_study(tmp_path):
    from llava_swap.study import prepare_data

    study = StudyConfig.from_dict({**quick_study(tmp_path), "tasks": ["vqa_scene"]})
    prepare_data(study, tmp_path)
    train = tmp_path / "data" / "train.json"
    stamp = train.stat().st_mtime_ns
    prepare_data(study, tmp_path)  # another job of the same study: the files another job reads stay untouched
    assert train.stat().st_mtime_ns == stamp
    prepare_data(StudyConfig.from_dict({**quick_study(tmp_path), "tasks": ["vqa_scene"], "data_seed": 1}), tmp_path)
    assert train.stat().st_mtime_ns != stamp  # other data: generated again


def test_reordering_a_predictions_file_changes_nothing(study, tmp_path):
    """Variants are paired by item id: one variant's predictions.jsonl in another order gives the same analysis."""
    import random
    import shutil

    from llava_swap.records import StudyLayout
    from llava_swap.report import analyse

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    predictions = StudyLayout(copy).task_eval("llama2", "vqa_scene", 1).predictions
    lines = predictions.read_text().splitlines()
    random.Random(0).shuffle(lines)
    predictions.write_text("\n".join(lines) + "\n")
    before, after = analyse(out), analyse(copy)
    for key in ("score", "differences", "agreement", "calibration"):
        assert after["tasks"]["vqa_scene"]["per_seed"]["1"][key] == before["tasks"]["vqa_scene"]["per_seed"]["1"][key]
    assert after["tasks"]["vqa_scene"]["across_seeds"] == before["tasks"]["vqa_scene"]["across_seeds"]
    assert after["ablations"] == before["ablations"]


def test_a_changed_entry_retrains_only_that_variant(study, tmp_path):
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = quick_study(copy)
    manifest["variants"][0]["language_model"] = "tiny:llama1"  # the "llama2" slot now holds a LLaMA-1-style LM
    status = run_study(StudyConfig.from_dict(manifest), analyze=False)
    assert status == {
        "llama2": {0: "trained", 1: "trained"},
        "llama3": {0: "reused", 1: "reused"},
        "llama3-no-pretrain": {0: "reused", 1: "reused"},
    }


def test_changed_analysis_settings_evaluate_again_without_retraining(study, tmp_path):
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = {**quick_study(copy), "seeds": [0], "relevancy_examples": 1}
    weights = copy / "variants" / "llama3" / "seed-0" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    status = run_study(StudyConfig.from_dict(manifest), analyze=False)
    assert status == {name: {0: "re-evaluated"} for name in ("llama2", "llama3", "llama3-no-pretrain")}
    assert weights.stat().st_mtime_ns == before  # the model was not retrained
    maps = json.loads((copy / "variants" / "llama3" / "seed-0" / "eval" / "vqa_scene" / "relevancy.json").read_text())
    assert len(maps) == 1
    assert run_study(StudyConfig.from_dict(manifest), analyze=False)["llama3"] == {0: "reused"}


def test_an_added_seed_trains_only_the_new_runs(study, tmp_path, caplog):
    import logging
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = {**quick_study(copy), "seeds": [0, 1, 2], "ablations": {}}
    manifest["variants"] = manifest["variants"][:2]
    with caplog.at_level(logging.INFO, logger="llava_swap.study"):
        status = run_study(StudyConfig.from_dict(manifest))
    assert status == {name: {0: "reused", 1: "reused", 2: "trained"} for name in ("llama2", "llama3")}
    assert "[study] llama3 seed 2 (run 6/6): training" in caplog.text
    results = json.loads((copy / "results.json").read_text())
    assert results["comparisons"]["size"] == 9  # 1 pair x 3 tasks x 3 seeds
    assert set(results["tasks"]["vqa_scene"]["across_seeds"]["score"]["llama2"]["per_seed"]) == {"0", "1", "2"}
    assert "(1 pair x 3 tasks x 3 seeds)" in (copy / "report.md").read_text()


def test_a_single_seed_manifest_means_one_run_on_data_of_that_seed(tmp_path):
    from llava_swap.study import variant_recipe

    manifest = {key: value for key, value in quick_study(tmp_path).items() if key not in ("seeds", "data_seed")}
    study = StudyConfig.from_dict({**manifest, "seed": 3})
    assert (study.seeds, study.data_seed) == ([3], 3)
    data = {"train": tmp_path / "t.json", "pretrain": tmp_path / "p.json"}
    recipe = variant_recipe(study, study.variants[0], data, tmp_path, seed=3)
    assert recipe.seed == 3 and recipe.output_dir == str(tmp_path / "variants" / "llama2" / "seed-3")
    assert StudyConfig.from_dict({**manifest, "seed": 3, "data_seed": 5}).data_seed == 5
    assert (StudyConfig.from_dict(manifest).seeds, StudyConfig.from_dict(manifest).data_seed) == ([0], 0)


def test_the_default_study_runs_three_seeds_on_one_set_of_data():
    from llava_swap.study import default_study

    study = default_study()
    assert (study.seeds, study.data_seed) == ([0, 1, 2], 0)
    assert study.vision_model == "tiny:clip-pretrained"  # an encoder that can see the tasks' images
    assert [study.train_items(task) for task in study.tasks] == [20000, 4000, 6000]
    assert [study.test_items(task) for task in study.tasks] == [1000, 200, 200]


def test_training_items_per_task(tmp_path):
    from llava_swap.study import DEFAULT_TEST, DEFAULT_TEST_ITEMS, DEFAULT_TRAIN, DEFAULT_TRAIN_ITEMS, prepare_data

    manifest = {**quick_study(tmp_path), "train_per_task": {"vqa_scene": 12}}
    study = StudyConfig.from_dict(manifest)
    assert study.train_items("vqa_scene") == 12
    assert study.train_items("seismic_description") == DEFAULT_TRAIN_ITEMS["seismic_description"]
    # Unset, with tasks of the manifest's own: each task gets its default.
    study = StudyConfig.from_dict({**manifest, "tasks": ["shapes"], "train_per_task": None})
    assert study.train_items("shapes") == DEFAULT_TRAIN
    study = StudyConfig.from_dict(
        {
            **manifest,
            "train_per_task": {"vqa_scene": 12, "seismic_description": 3, "seismic_coordinates": 2},
            "test_per_task": {"vqa_scene": 5, "seismic_description": 2, "seismic_coordinates": 3},
        }
    )
    prepare_data(study, tmp_path)
    counts = {
        (task, split): len(json.loads((tmp_path / "data" / task / f"{split}.json").read_text()))
        for task in study.tasks
        for split in ("train", "test")
    }
    assert counts == {
        ("vqa_scene", "train"): 12,
        ("vqa_scene", "test"): 5,
        ("seismic_description", "train"): 3,
        ("seismic_description", "test"): 2,
        ("seismic_coordinates", "train"): 2,
        ("seismic_coordinates", "test"): 3,
    }
    # Test items default per task too.
    study = StudyConfig.from_dict({**manifest, "test_per_task": {"vqa_scene": 7}})
    assert [study.test_items(task) for task in study.tasks] == [7, DEFAULT_TEST, DEFAULT_TEST]
    assert DEFAULT_TEST_ITEMS["vqa_scene"] > DEFAULT_TEST
    with pytest.raises(ValueError, match=r"train_per_task names \['shapes'\], which are not among tasks"):
        StudyConfig.from_dict({**manifest, "train_per_task": {"shapes": 5}})
    with pytest.raises(ValueError, match="train_per_task for vqa_scene must be an integer of at least 1; got 0"):
        StudyConfig.from_dict({**manifest, "train_per_task": {"vqa_scene": 0}})
    with pytest.raises(ValueError, match="train_per_task must be a number or one per task"):
        StudyConfig.from_dict({**manifest, "train_per_task": "many"})
    with pytest.raises(
        ValueError, match="test_per_task for seismic_coordinates must be an integer of at least 2; got 1"
    ):
        StudyConfig.from_dict({**manifest, "test_per_task": {"seismic_coordinates": 1}})
    with pytest.raises(ValueError, match="test_per_task for vqa_scene must be an integer of at least 2; got 1"):
        StudyConfig.from_dict({**manifest, "test_per_task": 1})


def test_seed_manifest_errors():
    manifest = quick_study("x")
    with pytest.raises(ValueError, match=r"either `seed` .* or `seeds` .* not both"):
        StudyConfig.from_dict({**manifest, "seed": 0})
    with pytest.raises(ValueError, match=r"seeds must be unique; \[1\] repeated in \[0, 1, 1\]"):
        StudyConfig.from_dict({**manifest, "seeds": [0, 1, 1]})
    for bad in ([], 3, [0, "1"], [-1], [True]):
        with pytest.raises(ValueError, match="seeds must be a non-empty list of non-negative integers"):
            StudyConfig.from_dict({**manifest, "seeds": bad})
    with pytest.raises(ValueError, match="data_seed must be a non-negative integer"):
        StudyConfig.from_dict({**manifest, "data_seed": "0"})
    with pytest.raises(ValueError, match=r"--seeds: seeds must be unique"):
        StudyConfig.from_dict(manifest).with_seeds([2, 2])


def test_the_study_command_takes_seeds(monkeypatch, tmp_path, capsys):
    import llava_swap.study

    seen = {}

    def fake_run_study(config, out, only=None):
        seen.update(seeds=config.seeds, data_seed=config.data_seed)
        return {variant.name: dict.fromkeys(config.seeds, "reused") for variant in config.variants}

    monkeypatch.setattr(llava_swap.study, "run_study", fake_run_study)
    assert main(["study", "--seeds", "4", "5", "--out", str(tmp_path)]) == 0
    assert seen == {"seeds": [4, 5], "data_seed": 0}
    assert "llama2 seed 4 reused, llama2 seed 5 reused" in capsys.readouterr().out


def _comparison(estimate: float, p: float) -> dict:
    return {"estimate": estimate, "low": estimate - 0.1, "high": estimate + 0.1, "p_value": p / 2, "p_adjusted": p}


def _results(differences: dict[str, tuple[float, float]], controls: tuple[float, float] = (0.0, 1.0)) -> dict:
    """A results dict with one task and two variants: per seed, the difference a - b and its adjusted p; `controls`
    (estimate, adjusted p) is variant a's difference from the question-only baseline and its image dependence."""
    control = _comparison(*controls)
    per_seed = {
        seed: {
            "above_chance": {"a": control, "b": _comparison(0.0, 1.0)},
            "image_dependence": {"a": {"blank": control, "other": control}, "b": {"blank": control, "other": control}},
            "score": {"a": {"estimate": 0.5}, "b": {"estimate": 0.5 - estimate}},
            "differences": {
                "a - b": {
                    "estimate": estimate,
                    "low": estimate - 0.1,
                    "high": estimate + 0.1,
                    "p_value": p / 2,
                    "p_adjusted": p,
                }
            },
        }
        for seed, (estimate, p) in differences.items()
    }
    seeds = [int(seed) for seed in differences]
    return {
        "manifest": {"seeds": seeds},
        "seeds": seeds,
        "comparisons": {"size": len(seeds)},
        "tasks": {"vqa_scene": {"chance": {"mean": 0.25}, "per_seed": per_seed}},
    }


@pytest.mark.parametrize(
    ("controls", "above", "sees"),
    [
        ((0.2, 0.01), "above the question-only baseline (0.250) in every seed (0, 1): a 0.500", "answers of a"),
        ((0.2, 0.2), "no variant scores above the question-only baseline (0.250)", "no variant's answers"),
        ((-0.2, 0.01), "no variant scores above", "no variant's answers"),  # significantly below is not above
        ((0.005, 0.001), "above the question-only baseline", "by less than 0.01"),  # steady but too small to matter
    ],
)
def test_chance_and_image_findings_need_every_seed(controls, above, sees):
    from llava_swap.report import _findings

    text = "\n".join(_findings(_results({"0": (0.0, 1.0), "1": (0.0, 1.0)}, controls), ["a", "b"]))
    assert above in text
    assert sees in text


@pytest.mark.parametrize(
    ("differences", "claimed", "said"),
    [
        ({"0": (0.3, 0.01), "1": (0.2, 0.02)}, True, "a scores higher than every other variant in every seed (0, 1)"),
        ({"0": (-0.3, 0.01), "1": (-0.2, 0.001)}, True, "b scores higher than every other variant in every seed"),
        ({"0": (0.3, 0.2), "1": (0.2, 0.02)}, False, "not claimed: a - b significant in seed 1 only (of 0, 1)"),
        ({"0": (0.3, 0.01), "1": (-0.2, 0.02)}, False, "in opposite directions (seed 0 +, seed 1 -)"),
        ({"0": (0.3, 0.2), "1": (0.2, 0.3)}, False, "no difference between variants survives the Holm correction"),
        ({"0": (0.3, 0.01)}, True, "a scores higher than every other variant (after Holm correction)"),
    ],
)
def test_a_finding_holds_only_in_every_seed_with_one_sign(differences, claimed, said):
    from llava_swap.report import _findings

    text = "\n".join(_findings(_results(differences), ["a", "b"]))
    assert said in text
    assert ("scores higher" in text) == claimed
    assert ("differences that survive the correction" in text) == claimed
    assert ("Caveat: one training run per variant (seed 0)" in text) == (len(differences) == 1)

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
        recipe = variant_recipe(study, variant, data, tmp_path, seed=0)
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
    stages = {s.stage: s for s in variant_recipe(study, study.variants[0], data, tmp_path, seed=0).stages}
    assert stages["pretrain"].max_steps == 13  # ceil(100 / 8)
    assert stages["finetune"].max_steps == 4  # 256 / 64


@pytest.mark.parametrize(
    ("effects", "said"),
    [
        ({"0": (-0.2, 0.01), "1": (-0.1, 0.03)}, "gives the correct answer a lower probability on vqa_scene in every"),
        ({"0": (-0.2, 0.01), "1": (-0.1, 0.3)}, "significant in seed 0 only (of 0, 1); not consistent across seeds"),
    ],
)
def test_an_ablation_effect_is_claimed_only_in_every_seed(effects, said):
    from llava_swap.report import _findings

    results = _results({seed: (0.0, 1.0) for seed in effects})
    results["manifest"].update(baseline="b", ablations={"connector pretraining": "a"})
    results["ablations"] = {
        "per_seed": {
            seed: {"connector pretraining": {"vqa_scene": {"estimate": estimate, "p_adjusted": p}}}
            for seed, (estimate, p) in effects.items()
        }
    }
    text = "\n".join(_findings(results, ["a", "b"]))
    assert "a (the connector pretraining ablation of b)" in text and said in text
