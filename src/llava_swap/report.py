"""The study report: every analysis computed from stored records alone, as `results.json`, `report.md` and plots.

Inputs are what `study.run_study` stored per variant, training seed and task (`predictions.jsonl`, pooled hidden
states, relevancy maps); nothing is retrained or regenerated, so `llava-swap analyze --study DIR` rebuilds the same
report any time.

Every analysis runs once per training seed, on that seed's runs. Each headline number carries a 95% interval over
items (Wilson for accuracies, bootstrap otherwise), and every difference between variants an interval and a test
suited to its scores (exact McNemar for correct/incorrect, a paired permutation test otherwise); variants are paired
item by item by record id, never by line order. One Holm correction covers the whole family: every pair of variants
on every task in every seed (ablation effects: every factor on every task in every seed). Over the seeds each
statistic gets its mean, between-seed SD and range (`analysis.seeds.spread`), so the variance between training runs
shows beside the sampling of items. A finding ("A scores higher than B", a "best" variant, an ablation effect) is
stated only where it holds across seeds: the Holm-adjusted p below 0.05 in every seed, with the same sign
(`analysis.seeds.consistency`); a difference found in some seeds only is reported as not consistent across seeds.

Two controls frame the comparison. Chance level: every variant against the question-only baseline
(`analysis.blind_baseline`), per question type and item by item. Image dependence: the reference answer's probability
with a blank and with another item's image (`analysis.image_dependence`), beside which the relevancy share is shown
with its blank-image control. Each is Holm-corrected as its own family and stated under the same every-seed rule.

results.json (seeds are string keys):
- "manifest", "seeds";
- "tasks": {task: {"chance": {"by_question_type", "mean"} (the question-only baseline), "per_seed": {seed:
  {"metrics", "score", "differences", "agreement", "calibration", "ece_interval", "representations", "relevancy",
  "above_chance", "by_question_type", "image_dependence", "parse_rate" (structured tasks)}}, "across_seeds":
  {"score", "differences" (with "consistency"), "kappa", "phi", "ece", "adaptive_ece", "brier", "image_share",
  "relevancy_blank_share", "above_chance", "by_question_type", "image_dependence_blank", "image_dependence_other",
  "stability", "stability_baseline_p95", "cka_matched", "cka_matched_baseline_p95", "parse_rate"}}}, each
  across-seed entry a `Spread` (per_seed, mean, sd, min, max, n);
- "comparisons": the Holm family of the differences (size, pairs, tasks, seeds), and the sizes of the above-chance
  and image-dependence families;
- "ablations" (where the manifest has some): {"per_seed": {seed: {factor: {task: effect}}}, "across_seeds",
  "comparisons"};
- "plots": the files under plots/ (drawn from the first training seed).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .analysis.ablation import ablation_effects
from .analysis.agreement import agreement_report
from .analysis.blind_baseline import BlindBaseline, blind_baseline
from .analysis.inference import (
    compare_paired,
    format_interval,
    format_p,
    holm,
    mean_interval,
    statistic_interval,
)
from .analysis.representations import cka_baseline, cka_matrix, debiased_cka, relative_depth_pairs
from .analysis.seeds import ALPHA, Consistency, consistency, spread
from .evaluation import read_predictions
from .metrics import calibration
from .records import EvaluationRecord, StudyLayout
from .tasks import get_task

logger = logging.getLogger(__name__)

COUNTERFACTUALS = ("blank", "other")
MIN_DEPENDENCE = 0.01  # the smallest drop in the reference answer's probability the findings call image dependence  # the image replaced by a blank one, and by another item's image
Records = dict[str, dict[str, list[EvaluationRecord]]]  # task -> variant -> records, aligned by item id


def _manifest(layout: StudyLayout) -> dict[str, Any]:
    manifest = json.loads(layout.manifest.read_text())
    if "seeds" not in manifest:
        raise ValueError(
            f"{layout.manifest} is from before training seeds were a study axis (one `seed`, runs in "
            "variants/<name>/): run `llava-swap study` on this folder again to train its runs under "
            "variants/<name>/seed-<seed>/."
        )
    return manifest


def _finished(layout: StudyLayout, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The training seeds whose runs have all finished, and the runs (NAME@SEED) not finished yet. Jobs of a study
    spread over machines (`--only`) finish in any order: the report covers the complete seeds and names the rest."""
    done = {
        (name, seed): layout.run_record(name, seed).exists()
        for seed in manifest["seeds"]
        for name in _variants(manifest)
    }
    missing = [f"{name}@{seed}" for (name, seed), finished in done.items() if not finished]
    _check_evaluations(layout, manifest, [run for run, finished in done.items() if finished])
    seeds = [str(seed) for seed in manifest["seeds"] if all(done[name, seed] for name in _variants(manifest))]
    if not seeds:
        raise FileNotFoundError(
            f"{layout.root}: no training seed has every run finished (missing: {', '.join(missing)}); run them "
            "(llava-swap study --only NAME@SEED) before analysing."
        )
    if missing:
        logger.warning(f"Analysing seeds {', '.join(seeds)} only; runs not finished yet: {', '.join(missing)}")
    return seeds, missing


def _check_evaluations(layout: StudyLayout, manifest: dict[str, Any], runs: list[tuple[str, int]]) -> None:
    """Every finished run was evaluated on the study's current test items with its current analysis settings: a
    report never mixes runs evaluated differently (jobs run with an older manifest, say)."""
    from .study import StudyConfig, evaluation_key

    fields = {name: value for name, value in manifest.items() if name != "seed"}  # resolved: seeds are set
    folders = {task: layout.data / task for task in manifest["tasks"]}
    expected = evaluation_key(StudyConfig.from_dict(fields, str(layout.manifest)), folders)
    stale = [
        f"{name}@{seed}"
        for name, seed in runs
        if json.loads(layout.run_record(name, seed).read_text()).get("evaluation") != expected
    ]
    if stale:
        raise ValueError(
            f"{layout.root}: runs {', '.join(stale)} were evaluated on other test items or with other analysis "
            "settings than the manifest's; run `llava-swap study` (or `--only` them) to evaluate them again."
        )


def _variants(manifest: dict[str, Any]) -> list[str]:
    return [variant["name"] for variant in manifest["variants"]]


def _records(layout: StudyLayout, manifest: dict[str, Any], seed: int) -> Records:
    """One training seed's evaluation records, per task and variant, aligned by item id."""
    records: Records = {}
    for task in manifest["tasks"]:
        by_variant = {}
        for name in _variants(manifest):
            path = layout.task_eval(name, task, seed).predictions
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run the study (llava-swap study) before analysing it.")
            by_variant[name] = read_predictions(path)
        records[task] = _aligned(f"{task}, seed {seed}", by_variant)
    return records


def _layers(path: Path) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{index}"] for index in range(len(stored.files))]


def analyse(study_dir: str | Path) -> dict[str, Any]:
    """All analyses of a finished study, as one JSON-serialisable dict (what results.json holds)."""
    layout = StudyLayout(study_dir)
    manifest = _manifest(layout)
    seeds, missing = _finished(layout, manifest)
    records = {seed: _records(layout, manifest, int(seed)) for seed in seeds}
    chance = {task: _blind(layout, task) for task in manifest["tasks"]}
    tasks = {
        task: {
            "chance": {"by_question_type": chance[task].by_type(), "mean": statistics.fmean(chance[task].scores)},
            "per_seed": {
                seed: _analyse_task(layout, manifest, task, int(seed), records[seed][task], chance[task])
                for seed in seeds
            },
        }
        for task in manifest["tasks"]
    }
    # One family: every pairwise difference of every task in every seed (what the findings may call a difference).
    size = _holm_in_place(
        diff
        for result in tasks.values()
        for per_seed in result["per_seed"].values()
        for diff in per_seed["differences"].values()
    )
    # Two more families, each corrected on its own: every variant against the question-only baseline, and every
    # variant's image dependence under both counterfactuals, on every task in every seed.
    above_chance = _holm_in_place(
        versus
        for result in tasks.values()
        for per_seed in result["per_seed"].values()
        for versus in per_seed["above_chance"].values()
    )
    dependence = _holm_in_place(
        per_seed["image_dependence"][name][counterfactual]
        for result in tasks.values()
        for per_seed in result["per_seed"].values()
        for name in per_seed["image_dependence"]
        for counterfactual in COUNTERFACTUALS
    )
    pairs = math.comb(len(manifest["variants"]), 2)
    results: dict[str, Any] = {
        "manifest": manifest,
        "seeds": [int(seed) for seed in seeds],  # those with every run finished
        "missing": missing,
        "tasks": tasks,
        "comparisons": {
            "family": "every pairwise difference of every task in every training seed",
            "size": size,
            "pairs": pairs,
            "tasks": len(tasks),
            "seeds": len(seeds),
            "method": "Holm",
            "alpha": ALPHA,
            "rule": "a difference is stated only where its adjusted p is below alpha in every seed, with one sign",
            "above_chance_size": above_chance,
            "image_dependence_size": dependence,
        },
    }
    for result in tasks.values():
        result["across_seeds"] = _across_seeds(result["per_seed"])
    if manifest.get("ablations"):
        results["ablations"] = _ablations(manifest, records)
    return results


def _analyse_task(
    layout: StudyLayout,
    manifest: dict[str, Any],
    task: str,
    seed: int,
    by_variant: dict[str, list[EvaluationRecord]],
    blind: BlindBaseline,
) -> dict[str, Any]:
    """Every analysis of one task on one training seed's runs. Resampling uses the data seed, the same for every
    training seed."""
    variants = _variants(manifest)
    resampling = manifest["data_seed"]
    scores = {name: [r.score for r in by_variant[name]] for name in variants}
    blind_score = dict(zip(blind.ids, blind.scores, strict=True))
    if set(blind_score) != {record.id for record in by_variant[variants[0]]}:
        raise ValueError(
            f"{task}, seed {seed}: the predictions were made on other test items than the study's data/{task}; run the "
            "study again to re-evaluate them."
        )
    chance = [blind_score[record.id] for record in by_variant[variants[0]]]  # in the aligned item order
    result: dict[str, Any] = {
        "metrics": {
            name: json.loads(layout.task_eval(name, task, seed).metrics.read_text())["metrics"] for name in variants
        },
        "score": {name: mean_interval(scores[name], seed=resampling) for name in variants},
        "differences": {
            f"{a} - {b}": compare_paired(scores[a], scores[b], seed=resampling)
            for a, b in itertools.combinations(variants, 2)
        },
        "agreement": agreement_report({name: [r.to_dict() for r in rs] for name, rs in by_variant.items()}),
        "calibration": {
            name: calibration([r.confidence for r in by_variant[name]], [r.correct for r in by_variant[name]])
            for name in variants
        },
        "ece_interval": {
            name: statistic_interval(
                ([r.confidence for r in by_variant[name]], [r.correct for r in by_variant[name]]),
                lambda confidence, correct: calibration(confidence, correct)["ece"],
                seed=resampling,
            )
            for name in variants
        },
        "representations": _representations(layout, task, seed, variants),
        "relevancy": _relevancy(layout, task, seed, variants),
        "above_chance": {name: compare_paired(scores[name], chance, seed=resampling) for name in variants},
        "by_question_type": {name: _by_question_type(by_variant[name]) for name in variants},
        "image_dependence": _image_dependence(layout, task, seed, by_variant, resampling),
    }
    if get_task(task).structured_output:
        result["parse_rate"] = {
            name: mean_interval([float(r.parsed is not None) for r in by_variant[name]], seed=resampling)
            for name in variants
        }
    return result


def _holm_in_place(comparisons: Iterable[dict[str, Any]]) -> int:
    """Holm over one family of comparisons, each given its `p_adjusted`; returns the family's size."""
    family = list(comparisons)
    adjusted = holm({index: comparison["p_value"] for index, comparison in enumerate(family)})
    for index, comparison in enumerate(family):
        comparison["p_adjusted"] = adjusted[index]
    return len(family)


def _at(value: Any, keys: Sequence[str | int]) -> Any:
    for key in keys:
        value = value[key]
    return value


def _over_seeds(per_seed: dict[str, Any], *keys: str | int) -> dict[str, Any]:
    """The spread over seeds of the value at `per_seed[seed][keys[0]][keys[1]]...`."""
    return spread({seed: _at(result, keys) for seed, result in per_seed.items()}).to_dict()


def _compared_over_seeds(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One comparison (a pair's difference, a factor's effect) over seeds: the spread of its estimate and whether it
    holds in every seed."""
    return {**_over_seeds(per_seed, "estimate"), "consistency": consistency(per_seed).to_dict()}


def _across_seeds(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A task's statistics summarised over the training seeds."""
    first = next(iter(per_seed.values()))
    variants = list(first["score"])
    representations = first["representations"]
    summary: dict[str, Any] = {
        "score": {name: _over_seeds(per_seed, "score", name, "estimate") for name in variants},
        "differences": {
            pair: _compared_over_seeds({seed: result["differences"][pair] for seed, result in per_seed.items()})
            for pair in first["differences"]
        },
        **{
            measure: {
                pair: _over_seeds(per_seed, "agreement", "pairs", pair, measure) for pair in first["agreement"]["pairs"]
            }
            for measure in ("kappa", "phi")
        },
        **{
            measure: {name: _over_seeds(per_seed, "calibration", name, measure) for name in variants}
            for measure in ("ece", "adaptive_ece", "brier")
        },
        "image_share": {name: _over_seeds(per_seed, "relevancy", name, "image_share") for name in variants},
        "relevancy_blank_share": {
            name: _over_seeds(per_seed, "image_dependence", name, "relevancy_blank_share") for name in variants
        },
        "above_chance": {
            name: _compared_over_seeds({seed: result["above_chance"][name] for seed, result in per_seed.items()})
            for name in variants
        },
        "by_question_type": {
            name: {
                kind: _over_seeds(per_seed, "by_question_type", name, kind) for kind in first["by_question_type"][name]
            }
            for name in variants
        },
        **{
            f"image_dependence_{counterfactual}": {
                name: _compared_over_seeds(
                    {seed: result["image_dependence"][name][counterfactual] for seed, result in per_seed.items()}
                )
                for name in variants
            }
            for counterfactual in COUNTERFACTUALS
        },
        **{
            measure: {
                name: [_over_seeds(per_seed, "representations", measure, name, layer) for layer in range(len(values))]
                for name, values in representations[measure].items()
            }
            for measure in ("stability", "stability_baseline_p95")
        },
        **{
            f"cka_matched{suffix}": {
                pair: [
                    _over_seeds(per_seed, "representations", "between_matched_depths", pair, cell, key)
                    for cell in range(len(cells))
                ]
                for pair, cells in representations["between_matched_depths"].items()
            }
            for suffix, key in (("", "cka"), ("_baseline_p95", "baseline_p95"))
        },
    }
    if "parse_rate" in first:
        summary["parse_rate"] = {name: _over_seeds(per_seed, "parse_rate", name, "estimate") for name in variants}
    return summary


def _ablations(manifest: dict[str, Any], records: dict[str, Records]) -> dict[str, Any]:
    """Ablation effects per training seed, Holm-adjusted over every factor and task in every seed, and over seeds."""
    variants = _variants(manifest)
    per_seed = {}
    for seed, by_task in records.items():
        probabilities = {
            name: {task: [r.prob_correct for r in by_task[task][name]] for task in by_task} for name in variants
        }
        per_seed[seed] = ablation_effects(
            probabilities, manifest["baseline"], manifest["ablations"], seed=manifest["data_seed"]
        )
    size = _holm_in_place(
        effect for effects in per_seed.values() for by_task in effects.values() for effect in by_task.values()
    )
    first = next(iter(per_seed.values()))
    across = {
        factor: {
            task: _compared_over_seeds({seed: effects[factor][task] for seed, effects in per_seed.items()})
            for task in by_task
        }
        for factor, by_task in first.items()
    }
    return {
        "per_seed": per_seed,
        "across_seeds": across,
        "comparisons": {"family": "every factor on every task in every training seed", "size": size, "method": "Holm"},
    }


def _aligned(where: str, by_variant: dict[str, list[EvaluationRecord]]) -> dict[str, list[EvaluationRecord]]:
    """Each variant's records in one item order, sorted by record id, matched by id: reordering a predictions file
    changes nothing, not even a resampled interval, and a variant missing an item is an error naming it."""
    names = list(by_variant)
    order = sorted(record.id for record in by_variant[names[0]])
    aligned = {}
    for name in names:
        by_id = {record.id: record for record in by_variant[name]}
        if len(by_id) != len(by_variant[name]) or set(by_id) != set(order):
            missing = sorted(set(order) ^ set(by_id))[:5]
            raise ValueError(
                f"{where}: variant {name!r} was not evaluated on the same items as {names[0]!r} (differing ids: "
                f"{missing}, or a repeated id); rerun its evaluation."
            )
        aligned[name] = [by_id[item] for item in order]
    return aligned


def _representations(layout: StudyLayout, task: str, seed: int, variants: list[str]) -> dict[str, Any]:
    """Debiased CKA within and between backbones and under perturbed images, each beside its shuffled-rows baseline
    (the 95th percentile of CKA once the inputs no longer correspond)."""
    evals = {name: layout.task_eval(name, task, seed) for name in variants}
    layers = {name: _layers(evals[name].hidden_states) for name in variants}
    perturbed = {name: _layers(evals[name].hidden_states_perturbed) for name in variants}
    matched = {}
    for a, b in itertools.combinations(variants, 2):
        matched[f"{a} vs {b}"] = [
            {
                "layers": [i, j],
                "cka": debiased_cka(layers[a][i], layers[b][j]),
                "baseline_p95": cka_baseline(layers[a][i], layers[b][j])["p95"],
            }
            for i, j in relative_depth_pairs(len(layers[a]), len(layers[b]))
        ]
    return {
        "measure": "debiased linear CKA",
        "within": {name: cka_matrix(layers[name], layers[name], debiased_cka) for name in variants},
        "between": {
            f"{a} vs {b}": cka_matrix(layers[a], layers[b], debiased_cka)
            for a, b in itertools.combinations(variants, 2)
        },
        "between_matched_depths": matched,
        "stability": {
            name: [debiased_cka(x, y) for x, y in zip(layers[name], perturbed[name], strict=True)] for name in variants
        },
        "stability_baseline_p95": {
            name: [cka_baseline(x, y)["p95"] for x, y in zip(layers[name], perturbed[name], strict=True)]
            for name in variants
        },
    }


def _relevancy(layout: StudyLayout, task: str, seed: int, variants: list[str]) -> dict[str, Any]:
    out = {}
    for name in variants:
        maps = json.loads(layout.task_eval(name, task, seed).relevancy.read_text())
        shares = [item["image_share"] for item in maps]
        out[name] = {"image_share": float(np.mean(shares)) if shares else None, "examples": len(maps)}
    return out


def _blind(layout: StudyLayout, task: str) -> BlindBaseline:
    """The question-only baseline of a task, from the study's generated training and test data."""
    folder = layout.data / task
    spec = get_task(task)
    return blind_baseline(spec, spec.load(folder, "train").records, spec.load(folder, "test").records)


def _by_question_type(records: list[EvaluationRecord]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for record in records:
        groups.setdefault(str(record.question_type), []).append(record.score)
    return {kind: statistics.fmean(values) for kind, values in sorted(groups.items())}


def _image_dependence(
    layout: StudyLayout, task: str, seed: int, by_variant: dict[str, list[EvaluationRecord]], resampling: int
) -> dict[str, Any]:
    """Per variant: real - blank and real - other image (paired differences of the reference answer's probability,
    recomputed here over the items in the aligned order, so a reordered file changes nothing), and the relevancy
    image share with blank images (the control beside the real share)."""
    out = {}
    for name, records in by_variant.items():
        path = layout.task_eval(name, task, seed).image_dependence
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the study (llava-swap study) again to measure it.")
        stored = json.loads(path.read_text())
        position = {item: index for index, item in enumerate(stored["ids"])}
        order = [record.id for record in records]
        if set(position) != set(order):
            raise ValueError(
                f"{path} was measured on other items than {task}'s predictions (seed {seed}, {name}); run the study "
                "again to re-evaluate it."
            )
        real = [stored["real"][position[item]] for item in order]
        out[name] = {
            **{
                counterfactual: compare_paired(
                    real, [stored[counterfactual][position[item]] for item in order], seed=resampling
                )
                for counterfactual in COUNTERFACTUALS
            },
            "relevancy_blank_share": stored["relevancy_blank_share"],
        }
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Plots


def _plots(study_dir: Path, results: dict[str, Any]) -> dict[str, str]:
    """The plots of the first training seed (the report's tables give every seed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    folder = StudyLayout(study_dir).plots
    folder.mkdir(exist_ok=True)
    seed = str(results["seeds"][0])
    by_task = {task: result["per_seed"][seed] for task, result in results["tasks"].items()}
    tasks = list(by_task)
    variants = _variants(results["manifest"])
    files: dict[str, str] = {}

    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        for name in variants:
            bins = [b for b in by_task[task]["calibration"][name]["bins"] if b["count"]]
            ece = by_task[task]["calibration"][name]["ece"]
            axis.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                label=f"{name} (ECE {ece:.3f})",
            )
        axis.set(
            title=f"Reliability: {task} (seed {seed})",
            xlabel="confidence (answer tokens)",
            ylabel="accuracy",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        axis.legend(fontsize=8)
    files["reliability"] = _save(figure, folder / "reliability.png")

    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        upset = by_task[task]["agreement"]["upset"]
        labels = sorted(upset, key=lambda key: (-upset[key], key))
        axis.bar(range(len(labels)), [upset[label] for label in labels], color="tab:blue")
        axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        axis.set(title=f"Who solves which items: {task} (seed {seed})", ylabel="items solved by exactly this set")
    files["agreement"] = _save(figure, folder / "agreement.png")

    pairs = list(by_task[tasks[0]]["representations"]["between"])
    figure, axes = plt.subplots(len(tasks), len(pairs), figsize=(3.6 * len(pairs), 3.2 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for column, pair in enumerate(pairs):
            matrix = np.array(by_task[task]["representations"]["between"][pair])
            image = axes[row][column].imshow(matrix, vmin=-0.1, vmax=1, cmap="viridis", origin="lower")
            a, b = pair.split(" vs ")
            axes[row][column].set(
                title=f"{task} (seed {seed})\ndebiased CKA {pair}", xlabel=f"{b} layer", ylabel=f"{a} layer"
            )
            axes[row][column].set_xticks(range(matrix.shape[1]))  # layer 0 = the embeddings
            axes[row][column].set_yticks(range(matrix.shape[0]))
            figure.colorbar(image, ax=axes[row][column], fraction=0.046)
    files["cka"] = _save(figure, folder / "cka.png")

    files["relevancy"] = _relevancy_plot(plt, StudyLayout(study_dir), tasks[0], int(seed), variants)
    if "ablations" in results:
        effects_by_factor = results["ablations"]["per_seed"][seed]
        figure, axis = plt.subplots(figsize=(7, 4))
        factors = list(effects_by_factor)
        width = 0.8 / max(len(tasks), 1)
        for index, task in enumerate(tasks):
            effects = [effects_by_factor[factor][task] for factor in factors]
            positions = np.arange(len(factors)) + index * width
            axis.bar(positions, [e["estimate"] for e in effects], width, label=task)
            axis.errorbar(
                positions,
                [e["estimate"] for e in effects],
                yerr=[[e["estimate"] - e["low"] for e in effects], [e["high"] - e["estimate"] for e in effects]],
                fmt="none",
                color="black",
                capsize=3,
            )
        axis.axhline(0, color="grey", linewidth=1)
        axis.set_xticks(np.arange(len(factors)) + width * (len(tasks) - 1) / 2, factors)
        axis.set(
            title=f"Ablation effects vs the baseline (seed {seed}; 95% bootstrap CI)",
            ylabel="change in P(correct answer)",
        )
        axis.legend(fontsize=8)
        files["ablations"] = _save(figure, folder / "ablations.png")
    return files


def _relevancy_plot(plt, layout: StudyLayout, task: str, seed: int, variants: list[str]) -> str:
    from PIL import Image

    examples = [json.loads(layout.task_eval(name, task, seed).relevancy.read_text()) for name in variants]
    count = max(1, min(len(items) for items in examples))
    figure, axes = plt.subplots(len(variants), count, figsize=(2.6 * count, 2.6 * len(variants)), squeeze=False)
    for row, (name, items) in enumerate(zip(variants, examples, strict=True)):
        for column in range(count):
            axis = axes[row][column]
            axis.axis("off")
            if column >= len(items) or items[column]["image_map"] is None:
                continue
            item = items[column]
            picture = Image.open(item["image"]).convert("RGB")
            heat = np.array(item["image_map"])
            axis.imshow(picture)
            axis.imshow(
                heat, cmap="jet", alpha=0.45, extent=(0, picture.width, picture.height, 0), interpolation="bilinear"
            )
            axis.set_title(f"{name}: image share {item['image_share']:.0%}", fontsize=8)
    figure.suptitle(f"Relevancy of the first answer token on the image ({task}, seed {seed})")
    return _save(figure, layout.plots / "relevancy.png")


def _save(figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return str(path.name)


# ---------------------------------------------------------------------------------------------------------------------
# Report


def build_report(study_dir: str | Path) -> Path:
    """Writes results.json, report.md and plots/*.png into the study folder, from its stored records."""
    study_dir = Path(study_dir)
    layout = StudyLayout(study_dir)
    results = analyse(study_dir)
    results["plots"] = _plots(study_dir, results)
    layout.results.write_text(json.dumps(results, indent=2, default=float))
    variants = _variants(results["manifest"])
    lines = [f"# Study report: {results['manifest']['name']}"]
    lines += _manifest_section(results["manifest"])
    if results["missing"]:
        lines += [
            "",
            f"**Partial:** runs not finished yet, left out with their seeds: {', '.join(results['missing'])}. This "
            f"report covers seed{'s' if len(results['seeds']) > 1 else ''} {', '.join(map(str, results['seeds']))}; "
            "run `llava-swap analyze` again when they finish.",
        ]
    for task in results["tasks"]:
        lines += _results_section(results, task, variants)
    lines += _chance_section(results, variants)
    lines += _agreement_section(results)
    lines += _calibration_section(results, variants)
    lines += _representations_section(results, variants)
    lines += _image_dependence_section(results, variants)
    lines += _relevancy_section(results, variants)
    lines += _structured_section(results)
    if "ablations" in results:
        lines += _ablations_section(results)
    lines += ["", "## Findings", ""] + _findings(results, variants)
    layout.report.write_text("\n".join(lines) + "\n")
    return layout.report


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _per_seed(values: Iterable[str]) -> str:
    """One value per seed, in the study's seed order."""
    return " / ".join(values)


def _spread(summary: dict[str, Any], fmt: str = ".3f") -> str:
    """`mean (SD sd, range min to max)` over seeds; the value alone with one seed; n/a where undefined in all."""
    if summary["mean"] is None:
        return "n/a"
    if summary["n"] < 2:
        return f"{summary['mean']:{fmt}}"
    return f"{summary['mean']:{fmt}} (SD {summary['sd']:{fmt}}, range {summary['min']:{fmt}} to {summary['max']:{fmt}})"


def _mean_sd(summary: dict[str, Any], fmt: str = ".3f") -> str:
    """`mean ± SD` over seeds (the compact form for cells holding several values); the value alone with one seed."""
    if summary["mean"] is None:
        return "n/a"
    return f"{summary['mean']:{fmt}}" + (f" ± {summary['sd']:{fmt}}" if summary["n"] > 1 else "")


def _optional(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _plots_caption(results: dict[str, Any]) -> str:
    seeds = results["seeds"]
    if len(seeds) == 1:
        return f"Plots: training seed {seeds[0]}."
    return f"Plots: training seed {seeds[0]}, the first of the study's {len(seeds)}; the tables give every seed."


def _items(manifest: dict[str, Any], field: str) -> str:
    counts = manifest[field]  # resolved per task when the study ran
    if isinstance(counts, dict):
        return " / ".join(f"{counts[task]} ({task})" for task in manifest["tasks"])
    return f"{counts} per task"


def _manifest_section(manifest: dict[str, Any]) -> list[str]:
    seeds = manifest["seeds"]
    lines = [
        "",
        "## Manifest",
        "",
        f"Vision encoder `{manifest['vision_model']}`; training seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))} (every variant is trained once per seed: the initialisation of the new rows and "
        f"the projector, and the data order); data seed {manifest['data_seed']} (the same generated data for every "
        f"seed); tasks {', '.join(manifest['tasks'])}; training items {_items(manifest, 'train_per_task')}; test "
        f"items {_items(manifest, 'test_per_task')}; budget {manifest['pretrain_examples']} pretraining and "
        f"{manifest['finetune_examples']} finetuning examples per run (within a seed, the same images, answers and "
        "order for every variant).",
        "",
        "| variant | language model | vision encoder | connector pretraining |",
        "|---|---|---|---|",
    ]
    for variant in manifest["variants"]:
        lines.append(
            f"| {variant['name']} | `{variant['language_model']}` | `{variant['vision_model'] or manifest['vision_model']}` "
            f"| {'yes' if variant['pretrain'] else 'no'} |"
        )
    return lines


def _results_section(results: dict[str, Any], task: str, variants: list[str]) -> list[str]:
    per_seed, across = results["tasks"][task]["per_seed"], results["tasks"][task]["across_seeds"]
    seeds = list(per_seed)
    lines = [
        "",
        f"## Results: {task}",
        "",
        f"| variant | score per seed ({' / '.join(seeds)}) [95% CI over items] | mean over seeds (between-seed SD, range) "
        "| task metrics (mean over seeds) |",
        "|---|---|---|---|",
    ]
    for name in variants:
        # Over the seeds where a metric is a number: some are undefined in a seed (mean_error when no coordinate
        # answer parses).
        defined: dict[str, list[float]] = {}
        for result in per_seed.values():
            for key, value in result["metrics"][name].items():
                if isinstance(value, float):
                    defined.setdefault(key, []).append(value)
        metrics = {key: statistics.fmean(values) for key, values in defined.items()}
        lines.append(
            f"| {name} | {_per_seed(format_interval(result['score'][name]) for result in per_seed.values())} "
            f"| {_spread(across['score'][name])} | " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + " |"
        )
    comparisons = results["comparisons"]
    lines += [
        "",
        f"Differences in mean score, per seed over the same items (95% paired bootstrap CI; two-sided test); p adjusted "
        f"by Holm over the family of all {comparisons['size']} differences of the study ("
        f"{_count(comparisons['pairs'], 'pair')} x {_count(comparisons['tasks'], 'task')} x "
        f"{_count(comparisons['seeds'], 'seed')}). A difference holds across seeds when its "
        f"adjusted p is below {ALPHA} in every seed, with one sign.",
        "",
        f"| pair | difference per seed ({' / '.join(seeds)}) [95% CI] | test | p per seed | adjusted p per seed "
        "| mean over seeds (SD, range) | holds across seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, summary in across["differences"].items():
        diffs = [result["differences"][pair] for result in per_seed.values()]
        lines.append(
            f"| {pair} | {_per_seed(format_interval(d) for d in diffs)} | {diffs[0]['test']} "
            f"| {_per_seed(format_p(d['p_value']) for d in diffs)} | {_per_seed(format_p(d['p_adjusted']) for d in diffs)} "
            f"| {_spread(summary)} | {'yes' if summary['consistency']['holds'] else 'no'} |"
        )
    return lines


def _agreement_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Instance-level agreement",
        "",
        "Do newer backbones solve more of the same items, or different ones? Per pair of variants, per seed "
        f"({' / '.join(map(str, results['seeds']))}), and kappa's mean ± SD over seeds:",
        "",
        "| task | pair | both, only A, only B, neither | phi | kappa | kappa over seeds | McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        for pair, kappa in result["across_seeds"]["kappa"].items():
            stats = [seed_result["agreement"]["pairs"][pair] for seed_result in result["per_seed"].values()]
            counts = _per_seed(f"{s['both']}, {s['only_a']}, {s['only_b']}, {s['neither']}" for s in stats)
            lines.append(
                f"| {task} | {pair} | {counts} | {_per_seed(_optional(s['phi']) for s in stats)} "
                f"| {_per_seed(_optional(s['kappa']) for s in stats)} | {_mean_sd(kappa)} "
                f"| {_per_seed(format_p(s['mcnemar_p']) for s in stats)} |"
            )
    return lines + ["", f"![agreement](plots/{results['plots']['agreement']})", "", _plots_caption(results)]


def _calibration_section(results: dict[str, Any], variants: list[str]) -> list[str]:
    lines = [
        "",
        "## Calibration",
        "",
        "Confidence is the probability of the answer: the geometric mean over its content tokens (tokens with a letter "
        'or digit that are not words of the task\'s format, so the `{` and `"x"` of a coordinate answer do not count). '
        "An answer is correct when its item score is at least 0.5. ECE uses 15 equal-width bins; its interval is a "
        "bootstrap over items.",
        "",
        f"| task | variant | ECE per seed ({' / '.join(map(str, results['seeds']))}) [95% CI] | ECE over seeds "
        "(SD, range) | adaptive ECE (mean ± SD) | Brier (mean ± SD) |",
        "|---|---|---|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        across = result["across_seeds"]
        for name in variants:
            eces = _per_seed(format_interval(r["ece_interval"][name]) for r in result["per_seed"].values())
            lines.append(
                f"| {task} | {name} | {eces} | {_spread(across['ece'][name])} | {_mean_sd(across['adaptive_ece'][name])} "
                f"| {_mean_sd(across['brier'][name])} |"
            )
    return lines + ["", f"![reliability](plots/{results['plots']['reliability']})", "", _plots_caption(results)]


def _representations_section(results: dict[str, Any], variants: list[str]) -> list[str]:
    lines = [
        "",
        "## Internal representations",
        "",
        "Debiased linear CKA (float64; Song et al. 2012's unbiased HSIC, ~0 for unrelated representations) of the LLM's "
        "pooled hidden states on the same prompts, as mean ± SD over the training seeds. Beside each value, in "
        "parentheses: the 95th percentile of the same measure with one side's rows shuffled (mean over seeds), i.e. "
        "what no relation looks like on these inputs; a value means something only above it. Stability compares the "
        "representations of the inputs and of the same inputs with slightly perturbed images (1 = unchanged).",
        "",
        "| task | variant | stability per layer (shuffled baseline) |",
        "|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        across = result["across_seeds"]
        for name in variants:
            shown = _beside_baseline(across["stability"][name], across["stability_baseline_p95"][name])
            lines.append(f"| {task} | {name} | {shown} |")
    lines += [
        "",
        "| task | pair | CKA at matched relative depths, first to last layer (shuffled baseline) |",
        "|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        across = result["across_seeds"]
        for pair, values in across["cka_matched"].items():
            lines.append(f"| {task} | {pair} | {_beside_baseline(values, across['cka_matched_baseline_p95'][pair])} |")
    return lines + ["", f"![cka](plots/{results['plots']['cka']})", "", _plots_caption(results)]


def _beside_baseline(values: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> str:
    """Per layer: `mean ± SD (mean shuffled baseline)` over seeds."""
    return ", ".join(
        f"{_mean_sd(value)} ({baseline['mean']:.3f})" for value, baseline in zip(values, baselines, strict=True)
    )


def _chance_section(results: dict[str, Any], variants: list[str]) -> list[str]:
    comparisons = results["comparisons"]
    lines = [
        "",
        "## Chance level",
        "",
        "What the question alone scores: every test question answered with one constant, the training answer to the "
        "same question (to its question type where the text was never asked) that scores best on those training "
        "items, scored like the variants. Per question type: that level, and each variant's mean score (mean ± SD "
        "over seeds).",
        "",
        "| task | question type | question-only baseline | " + " | ".join(variants) + " |",
        "|---|---|---|" + "---|" * len(variants),
    ]
    for task, result in results["tasks"].items():
        levels, across = result["chance"]["by_question_type"], result["across_seeds"]["by_question_type"]
        for kind, level in levels.items():
            if kind == "all" or (kind == "None" and len(levels) == 2):  # no question types: "all" says it
                continue
            cells = [_mean_sd(across[name][kind]) if kind in across[name] else "n/a" for name in variants]
            lines.append(f"| {task} | {kind} | {level:.3f} | " + " | ".join(cells) + " |")
        overall = [_mean_sd(result["across_seeds"]["score"][name]) for name in variants]
        lines.append(f"| {task} | all | {levels['all']:.3f} | " + " | ".join(overall) + " |")
    lines += [
        "",
        f"Each variant minus the question-only baseline, per seed ({' / '.join(map(str, results['seeds']))}), over the "
        f"same items; p adjusted by Holm over all {comparisons['above_chance_size']} such comparisons (every variant on "
        "every task in every seed):",
        "",
        "| task | variant | difference per seed [95% CI] | adjusted p per seed | above chance in every seed |",
        "|---|---|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        for name in variants:
            versus = [r["above_chance"][name] for r in result["per_seed"].values()]
            holds = _holds_upwards(result["across_seeds"]["above_chance"][name])
            lines.append(
                f"| {task} | {name} | {_per_seed(format_interval(v) for v in versus)} "
                f"| {_per_seed(format_p(v['p_adjusted']) for v in versus)} | {'yes' if holds else 'no'} |"
            )
    return lines


def _image_dependence_section(results: dict[str, Any], variants: list[str]) -> list[str]:
    comparisons = results["comparisons"]
    lines = [
        "",
        "## Image dependence",
        "",
        "Does the answer depend on the image? The probability the model gives the reference answer with the real "
        "image, minus the same with a blank image (the background colour only) and with another test item's image, "
        "on every test item (mean paired difference per seed, 95% bootstrap CI). A model that ignores the image "
        f"scores exactly 0. p adjusted by Holm over all {comparisons['image_dependence_size']} of them (every variant, "
        f"both counterfactuals, every task, every seed). The findings call a drop of at least {MIN_DEPENDENCE} that "
        "holds in every seed dependence.",
        "",
        f"| task | variant | real - blank per seed ({' / '.join(map(str, results['seeds']))}) | real - other image "
        "per seed | adjusted p (blank; other) | another item's image lowers it in every seed |",
        "|---|---|---|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        across = result["across_seeds"]
        for name in variants:
            per_seed = [r["image_dependence"][name] for r in result["per_seed"].values()]
            adjusted = _per_seed(
                f"{format_p(d['blank']['p_adjusted'])}; {format_p(d['other']['p_adjusted'])}" for d in per_seed
            )
            holds = _holds_upwards(across["image_dependence_other"][name])
            lines.append(
                f"| {task} | {name} | {_per_seed(format_interval(d['blank']) for d in per_seed)} "
                f"| {_per_seed(format_interval(d['other']) for d in per_seed)} | {adjusted} | {'yes' if holds else 'no'} |"
            )
    return lines


def _holds_upwards(summary: dict[str, Any]) -> bool:
    """A comparison that holds in every seed, with the first term higher."""
    return summary["consistency"]["holds"] and summary["consistency"]["direction"] > 0


def _relevancy_section(results: dict[str, Any], variants: list[str]) -> list[str]:
    lines = [
        "",
        "## Relevancy",
        "",
        "Share of the first answer token's relevance (Chefer et al. 2021) that lies on image tokens, mean ± SD over "
        "the training seeds, and in parentheses the same share on the same prompts with blank images. The share "
        "says where relevance flows, not whether the image matters (a model that ignores the image still sends "
        "relevance to its tokens); a real share close to the blank one says nothing about the content. The "
        "counterfactual measure is in Image dependence above.",
        "",
        "| task | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for task, result in results["tasks"].items():
        across = result["across_seeds"]
        shares = [
            f"{_mean_sd(across['image_share'][name], '.1%')} ({_mean_sd(across['relevancy_blank_share'][name], '.1%')})"
            for name in variants
        ]
        lines.append(f"| {task} | " + " | ".join(shares) + " |")
    return lines + ["", f"![relevancy](plots/{results['plots']['relevancy']})", "", _plots_caption(results)]


def _structured_section(results: dict[str, Any]) -> list[str]:
    structured = [task for task, result in results["tasks"].items() if "parse_rate" in result["across_seeds"]]
    if not structured:
        return []
    lines = [
        "",
        "## Structured output",
        "",
        f"Share of answers that parse into the structure the task asks for, per seed "
        f"({' / '.join(map(str, results['seeds']))}) and over seeds:",
    ]
    for task in structured:
        result = results["tasks"][task]
        lines += ["", f"{task}:", ""]
        for name, summary in result["across_seeds"]["parse_rate"].items():
            rates = _per_seed(format_interval(r["parse_rate"][name]) for r in result["per_seed"].values())
            lines.append(f"- {name}: {rates}; over seeds {_spread(summary)}")
    return lines


def _ablations_section(results: dict[str, Any]) -> list[str]:
    ablations = results["ablations"]
    lines = [
        "",
        "## Ablation effects",
        "",
        f"Change in the probability of the correct answer vs `{results['manifest']['baseline']}`, per seed "
        f"({' / '.join(map(str, results['seeds']))}); p Holm-adjusted over all {ablations['comparisons']['size']} "
        "effects (every factor on every task in every seed):",
        "",
    ]
    for factor, by_task in ablations["across_seeds"].items():
        for task, summary in by_task.items():
            effects = [per_seed[factor][task] for per_seed in ablations["per_seed"].values()]
            lines.append(
                f"- {factor} on {task}: {_per_seed(format_interval(e) for e in effects)}, "
                f"p = {_per_seed(format_p(e['p_value']) for e in effects)}, "
                f"Holm-adjusted p = {_per_seed(format_p(e['p_adjusted']) for e in effects)}; "
                f"over seeds {_spread(summary)}"
            )
    return lines + ["", f"![ablations](plots/{results['plots']['ablations']})", "", _plots_caption(results)]


def _findings(results: dict[str, Any], variants: list[str]) -> list[str]:
    """What the numbers support, in words. A difference is stated only where it holds across seeds (its
    Holm-adjusted p below ALPHA in every seed, with one sign), a "best" variant only where it beats every other one
    so; a difference significant in some seeds only is named as not consistent. With one seed, a caveat says what a
    single training run cannot tell."""
    seeds = [str(seed) for seed in results["seeds"]]
    findings = []
    for task, result in results["tasks"].items():
        findings += _chance_findings(task, result, variants, seeds)
        findings += _task_findings(task, result["per_seed"], variants, results["comparisons"]["size"], seeds)
    if "ablations" in results:
        findings += _ablation_findings(results["manifest"], results["ablations"]["per_seed"], seeds)
    if len(seeds) < 2:
        findings.append(
            "- Caveat: one training run per variant (seed "
            f"{seeds[0]}): the intervals cover the sampling of items, not the variance between training runs, "
            "so a difference here may not survive another seed."
        )
    return findings


def _task_findings(
    task: str, per_seed: dict[str, dict[str, Any]], variants: list[str], family: int, seeds: list[str]
) -> list[str]:
    if all(result["score"][name]["estimate"] == 0 for result in per_seed.values() for name in variants):
        return [
            f"- {task}: every variant scores 0{_in_every(seeds)}; no variant solves this task, so none is compared."
        ]
    pairs = list(next(iter(per_seed.values()))["differences"])
    verdicts = {pair: consistency({seed: per_seed[seed]["differences"][pair] for seed in seeds}) for pair in pairs}
    wins: dict[str, set[str]] = {name: set() for name in variants}
    for pair, verdict in verdicts.items():
        first, second = pair.split(" - ")
        if verdict.holds:
            winner, loser = (first, second) if verdict.direction > 0 else (second, first)
            wins[winner].add(loser)
    findings = []
    best = [name for name in variants if len(wins[name]) == len(variants) - 1]
    if best:
        findings.append(
            f"- {task}: {best[0]} scores higher than every other variant{_in_every(seeds)} (after Holm correction)."
        )
    held = [
        f"{pair}: {_per_seed(format_interval(per_seed[seed]['differences'][pair]) for seed in seeds)} (adjusted p "
        f"{_per_seed(format_p(per_seed[seed]['differences'][pair]['p_adjusted']) for seed in seeds)})"
        for pair, verdict in verdicts.items()
        if verdict.holds
    ]
    if held:
        findings.append(
            f"- {task}: differences that survive the correction{_in_every(seeds)}: " + "; ".join(held) + "."
        )
    unsettled = [
        f"{pair} {_inconsistency(verdict)}"
        for pair, verdict in verdicts.items()
        if verdict.significant_in and not verdict.holds
    ]
    if unsettled:
        findings.append(f"- {task}: not consistent across seeds, so not claimed: " + "; ".join(unsettled) + ".")
    if not held and not unsettled:
        findings.append(
            f"- {task}: no difference between variants survives the Holm correction ({family} comparisons) in any "
            "seed; the data do not rank them."
        )
    return findings


def _chance_findings(task: str, result: dict[str, Any], variants: list[str], seeds: list[str]) -> list[str]:
    """Which variants beat answering from the question alone, and whose answers depend on the image, in every seed
    (each Holm-corrected within its own family)."""
    per_seed = result["per_seed"]

    def higher_in_every_seed(section: str, *keys: str) -> list[str]:
        """The variants whose comparison at `per_seed[seed][section][name][keys...]` holds upwards in every seed."""
        verdicts = {
            name: consistency({seed: _at(per_seed[seed], [section, name, *keys]) for seed in seeds})
            for name in variants
        }
        return [name for name, verdict in verdicts.items() if verdict.holds and verdict.direction > 0]

    level = result["chance"]["mean"]
    above = higher_in_every_seed("above_chance")
    if above:
        means = {name: statistics.fmean(per_seed[seed]["score"][name]["estimate"] for seed in seeds) for name in above}
        findings = [
            f"- {task}: above the question-only baseline ({level:.3f}){_in_every(seeds)}: "
            + ", ".join(f"{name} {mean:.3f}" for name, mean in means.items())
            + " (mean over seeds; after Holm correction)."
        ]
    else:
        findings = [
            f"- {task}: no variant scores above the question-only baseline ({level:.3f}){_in_every(seeds)} after "
            "correction: no variant is shown to answer better than it would from the question alone."
        ]
    # A drop too small to matter is not called dependence, however steady: at least MIN_DEPENDENCE in every seed.
    seeing = [
        name
        for name in higher_in_every_seed("image_dependence", "other")
        if all(per_seed[seed]["image_dependence"][name]["other"]["estimate"] >= MIN_DEPENDENCE for seed in seeds)
    ]
    if seeing:
        drops = {
            name: statistics.fmean(per_seed[seed]["image_dependence"][name]["other"]["estimate"] for seed in seeds)
            for name in seeing
        }
        findings.append(
            f"- {task}: the answers of {', '.join(seeing)} depend on the image{_in_every(seeds)}: another item's image "
            "lowers the probability of the reference answer by "
            + ", ".join(f"{drop:.3g} ({name})" for name, drop in drops.items())
            + " on average (after Holm correction)."
        )
    else:
        findings.append(
            f"- {task}: no variant's answers are shown to depend on the image{_in_every(seeds)} (another item's "
            f"image lowers the reference answer's probability by less than {MIN_DEPENDENCE} or by nothing the tests "
            "can tell from 0)."
        )
    return findings


def _ablation_findings(
    manifest: dict[str, Any], per_seed: dict[str, dict[str, dict[str, Any]]], seeds: list[str]
) -> list[str]:
    """An ablation's effect (its variant minus the baseline) in words, under the same rule as the differences."""
    findings = []
    for factor, by_task in per_seed[seeds[0]].items():
        ablated = f"{manifest['ablations'][factor]} (the {factor} ablation of {manifest['baseline']})"
        for task in by_task:
            effects = {seed: per_seed[seed][factor][task] for seed in seeds}
            verdict = consistency(effects)
            if verdict.holds:
                direction = "higher" if verdict.direction > 0 else "lower"
                mean = spread({seed: effect["estimate"] for seed, effect in effects.items()}).mean
                findings.append(
                    f"- {ablated} gives the correct answer a {direction} probability on {task}{_in_every(seeds)} "
                    f"(mean change {mean:+.3g}, after Holm correction)."
                )
            elif verdict.significant_in:
                findings.append(
                    f"- {ablated} on {task}: {_inconsistency(verdict)}; not consistent across seeds, so not claimed."
                )
    return findings


def _in_every(seeds: list[str]) -> str:
    return f" in every seed ({', '.join(seeds)})" if len(seeds) > 1 else ""


def _inconsistency(verdict: Consistency) -> str:
    """Why a comparison significant somewhere does not hold across seeds."""
    if verdict.significant_in == verdict.seeds:
        signs = ", ".join(f"seed {seed} {'+' if sign > 0 else '-'}" for seed, sign in verdict.signs.items())
        return f"significant in every seed but in opposite directions ({signs})"
    only = verdict.significant_in
    named = f"seed {only[0]}" if len(only) == 1 else f"seeds {', '.join(only)}"
    return f"significant in {named} only (of {', '.join(verdict.seeds)})"


__all__ = ["analyse", "build_report"]
