"""The study report: every analysis computed from stored records alone, as `results.json`, `report.md` and plots.

Inputs are what `study.run_study` stored per variant and task (`predictions.jsonl`, pooled hidden states, relevancy
maps); nothing is retrained or regenerated, so `llava-swap analyze --study DIR` rebuilds the same report any time.
Every headline number carries a 95% interval (Wilson for accuracies, bootstrap otherwise), and every difference
between variants an interval, a test suited to its scores (exact McNemar for correct/incorrect, a paired permutation
test otherwise) and a Holm-adjusted p-value over all the study's comparisons; findings state only what survives it.
Variants are paired item by item by record id, never by line order.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from .analysis.ablation import ablation_effects
from .analysis.agreement import agreement_report
from .analysis.inference import (
    compare_paired,
    format_interval,
    format_p,
    holm,
    mean_interval,
    statistic_interval,
)
from .analysis.representations import cka_baseline, cka_matrix, debiased_cka, relative_depth_pairs
from .evaluation import read_predictions
from .metrics import calibration
from .records import EvaluationRecord, StudyLayout
from .tasks import get_task


def _load(study_dir: Path) -> tuple[dict, dict[str, dict[str, list[EvaluationRecord]]]]:
    layout = StudyLayout(study_dir)
    manifest = json.loads(layout.manifest.read_text())
    records: dict[str, dict[str, list[EvaluationRecord]]] = {}
    for task in manifest["tasks"]:
        records[task] = {}
        for variant in manifest["variants"]:
            path = layout.task_eval(variant["name"], task).predictions
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run the study (llava-swap study) before analysing it.")
            records[task][variant["name"]] = read_predictions(path)
    return manifest, records


def _layers(path: Path) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{index}"] for index in range(len(stored.files))]


def analyse(study_dir: str | Path) -> dict[str, Any]:
    """All analyses of a finished study, as one JSON-serialisable dict (what results.json holds)."""
    study_dir = Path(study_dir)
    manifest, records = _load(study_dir)
    variants = [variant["name"] for variant in manifest["variants"]]
    results: dict[str, Any] = {"manifest": manifest, "tasks": {}}
    for task, by_variant in records.items():
        metrics = {
            name: json.loads(StudyLayout(study_dir).task_eval(name, task).metrics.read_text())["metrics"]
            for name in variants
        }
        by_variant = _aligned(task, by_variant)
        scores = {name: [r.score for r in by_variant[name]] for name in variants}
        task_result: dict[str, Any] = {
            "metrics": metrics,
            "score": {name: mean_interval(scores[name], seed=manifest["seed"]) for name in variants},
            "differences": {
                f"{a} - {b}": compare_paired(scores[a], scores[b], seed=manifest["seed"])
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
                    seed=manifest["seed"],
                )
                for name in variants
            },
            "representations": _representations(study_dir, task, variants),
            "relevancy": _relevancy(study_dir, task, variants),
        }
        if get_task(task).structured_output:
            task_result["parse_rate"] = {
                name: mean_interval([float(r.parsed is not None) for r in by_variant[name]], seed=manifest["seed"])
                for name in variants
            }
        results["tasks"][task] = task_result
    # One family: every pairwise difference of every task (what the findings may call a difference).
    adjusted = holm(
        {
            (task, pair): diff["p_value"]
            for task, result in results["tasks"].items()
            for pair, diff in result["differences"].items()
        }
    )
    for (task, pair), p_adjusted in adjusted.items():
        results["tasks"][task]["differences"][pair]["p_adjusted"] = p_adjusted
    results["comparisons"] = {
        "family": "every pairwise difference of every task",
        "size": len(adjusted),
        "method": "Holm",
    }
    if manifest.get("ablations"):
        probabilities = {
            name: {task: [r.prob_correct for r in records[task][name]] for task in records} for name in variants
        }
        results["ablations"] = ablation_effects(
            probabilities, manifest["baseline"], manifest["ablations"], seed=manifest["seed"]
        )
    return results


def _aligned(task: str, by_variant: dict[str, list[EvaluationRecord]]) -> dict[str, list[EvaluationRecord]]:
    """Each variant's records in one item order (the first variant's), matched by record id: reordering a
    predictions file changes nothing, and a variant missing an item is an error naming it."""
    names = list(by_variant)
    order = [record.id for record in by_variant[names[0]]]
    aligned = {}
    for name in names:
        by_id = {record.id: record for record in by_variant[name]}
        if len(by_id) != len(by_variant[name]) or set(by_id) != set(order):
            missing = sorted(set(order) ^ set(by_id))[:5]
            raise ValueError(
                f"{task}: variant {name!r} was not evaluated on the same items as {names[0]!r} (differing ids: "
                f"{missing}, or a repeated id); rerun its evaluation."
            )
        aligned[name] = [by_id[item] for item in order]
    return aligned


def _representations(study_dir: Path, task: str, variants: list[str]) -> dict[str, Any]:
    """Debiased CKA within and between backbones and under perturbed images, each beside its shuffled-rows baseline
    (the 95th percentile of CKA once the inputs no longer correspond)."""
    evals = {name: StudyLayout(study_dir).task_eval(name, task) for name in variants}
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


def _relevancy(study_dir: Path, task: str, variants: list[str]) -> dict[str, Any]:
    out = {}
    for name in variants:
        maps = json.loads(StudyLayout(study_dir).task_eval(name, task).relevancy.read_text())
        shares = [item["image_share"] for item in maps]
        out[name] = {"image_share": float(np.mean(shares)) if shares else None, "examples": len(maps)}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Plots


def _plots(study_dir: Path, results: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    folder = StudyLayout(study_dir).plots
    folder.mkdir(exist_ok=True)
    tasks = list(results["tasks"])
    variants = [v["name"] for v in results["manifest"]["variants"]]
    files: dict[str, str] = {}

    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        for name in variants:
            bins = [b for b in results["tasks"][task]["calibration"][name]["bins"] if b["count"]]
            ece = results["tasks"][task]["calibration"][name]["ece"]
            axis.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                label=f"{name} (ECE {ece:.3f})",
            )
        axis.set(
            title=f"Reliability: {task}",
            xlabel="confidence (answer tokens)",
            ylabel="accuracy",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        axis.legend(fontsize=8)
    files["reliability"] = _save(figure, folder / "reliability.png")

    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        upset = results["tasks"][task]["agreement"]["upset"]
        labels = sorted(upset, key=lambda key: (-upset[key], key))
        axis.bar(range(len(labels)), [upset[label] for label in labels], color="tab:blue")
        axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        axis.set(title=f"Who solves which items: {task}", ylabel="items solved by exactly this set")
    files["agreement"] = _save(figure, folder / "agreement.png")

    pairs = list(results["tasks"][tasks[0]]["representations"]["between"])
    figure, axes = plt.subplots(len(tasks), len(pairs), figsize=(3.6 * len(pairs), 3.2 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for column, pair in enumerate(pairs):
            matrix = np.array(results["tasks"][task]["representations"]["between"][pair])
            image = axes[row][column].imshow(matrix, vmin=-0.1, vmax=1, cmap="viridis", origin="lower")
            a, b = pair.split(" vs ")
            axes[row][column].set(title=f"{task}\ndebiased CKA {pair}", xlabel=f"{b} layer", ylabel=f"{a} layer")
            axes[row][column].set_xticks(range(matrix.shape[1]))  # layer 0 = the embeddings
            axes[row][column].set_yticks(range(matrix.shape[0]))
            figure.colorbar(image, ax=axes[row][column], fraction=0.046)
    files["cka"] = _save(figure, folder / "cka.png")

    files["relevancy"] = _relevancy_plot(plt, study_dir, results, folder)
    if "ablations" in results:
        figure, axis = plt.subplots(figsize=(7, 4))
        factors = list(results["ablations"])
        width = 0.8 / max(len(tasks), 1)
        for index, task in enumerate(tasks):
            effects = [results["ablations"][factor][task] for factor in factors]
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
        axis.set(title="Ablation effects vs the baseline (95% bootstrap CI)", ylabel="change in P(correct answer)")
        axis.legend(fontsize=8)
        files["ablations"] = _save(figure, folder / "ablations.png")
    return files


def _relevancy_plot(plt, study_dir: Path, results: dict[str, Any], folder: Path) -> str:
    from PIL import Image

    task = next(iter(results["tasks"]))
    variants = [v["name"] for v in results["manifest"]["variants"]]
    examples = [json.loads(StudyLayout(study_dir).task_eval(name, task).relevancy.read_text()) for name in variants]
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
    figure.suptitle(f"Relevancy of the first answer token on the image ({task})")
    return _save(figure, folder / "relevancy.png")


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
    results = analyse(study_dir)
    plots = _plots(study_dir, results)
    results["plots"] = plots
    StudyLayout(study_dir).results.write_text(json.dumps(results, indent=2, default=float))
    manifest = results["manifest"]
    variants = [v["name"] for v in manifest["variants"]]
    lines = [
        f"# Study report: {manifest['name']}",
        "",
        "## Manifest",
        "",
        f"Vision encoder `{manifest['vision_model']}`; seed {manifest['seed']}; tasks {', '.join(manifest['tasks'])}; "
        f"{manifest['train_per_task']} training and {manifest['test_per_task']} test items per task; budget "
        f"{manifest['pretrain_examples']} pretraining and {manifest['finetune_examples']} finetuning examples per variant "
        "(the same images, answers and order for every variant).",
        "",
        "| variant | language model | vision encoder | connector pretraining |",
        "|---|---|---|---|",
    ]
    for variant in manifest["variants"]:
        lines.append(
            f"| {variant['name']} | `{variant['language_model']}` | `{variant['vision_model'] or manifest['vision_model']}` "
            f"| {'yes' if variant['pretrain'] else 'no'} |"
        )
    for task, result in results["tasks"].items():
        lines += ["", f"## Results: {task}", "", "| variant | mean score [95% CI] | task metrics |", "|---|---|---|"]
        for name in variants:
            shown = {k: v for k, v in result["metrics"][name].items() if isinstance(v, float)}
            lines.append(
                f"| {name} | {format_interval(result['score'][name])} | "
                + ", ".join(f"{k} {v:.3f}" for k, v in shown.items())
                + " |"
            )
        lines += [
            "",
            f"Differences in mean score over the same items (95% paired bootstrap CI; two-sided test; p adjusted by "
            f"Holm over all {results['comparisons']['size']} differences of the study):",
            "",
        ]
        for pair, diff in result["differences"].items():
            lines.append(
                f"- {pair}: {format_interval(diff)}, {diff['test']} p = {format_p(diff['p_value'])}, "
                f"adjusted p = {format_p(diff['p_adjusted'])}"
            )
    lines += ["", "## Instance-level agreement", ""]
    lines.append("Do newer backbones solve more of the same items, or different ones? Per pair of variants:")
    lines.append("")
    lines += [
        "| task | pair | both | only A | only B | neither | phi | kappa | McNemar p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        for pair, stats in result["agreement"]["pairs"].items():
            phi = "n/a" if stats["phi"] is None else f"{stats['phi']:.3f}"
            kappa = "n/a" if stats["kappa"] is None else f"{stats['kappa']:.3f}"
            lines.append(
                f"| {task} | {pair} | {stats['both']} | {stats['only_a']} | {stats['only_b']} | {stats['neither']} "
                f"| {phi} | {kappa} | {format_p(stats['mcnemar_p'])} |"
            )
    lines += ["", f"![agreement](plots/{plots['agreement']})", "", "## Calibration", ""]
    lines.append(
        "Confidence is the probability of the answer: the geometric mean over its content tokens (tokens with a letter "
        'or digit that are not words of the task\'s format, so the `{` and `"x"` of a coordinate answer do not count). '
        "An answer is correct when its item score is at least 0.5. ECE uses 15 equal-width bins; its interval is a "
        "bootstrap over items."
    )
    lines += ["", "| task | variant | ECE [95% CI] | adaptive ECE | Brier |", "|---|---|---|---|---|"]
    for task, result in results["tasks"].items():
        for name in variants:
            c = result["calibration"][name]
            ece = format_interval(result["ece_interval"][name])
            lines.append(f"| {task} | {name} | {ece} | {c['adaptive_ece']:.3f} | {c['brier']:.3f} |")
    lines += ["", f"![reliability](plots/{plots['reliability']})", "", "## Internal representations", ""]
    lines.append(
        "Debiased linear CKA (float64; Song et al. 2012's unbiased HSIC, ~0 for unrelated representations) of the LLM's "
        "pooled hidden states on the same prompts. Beside each value: the 95th percentile of the same measure with one "
        "side's rows shuffled, i.e. what no relation looks like on these inputs; a value means something only above "
        "it. Stability compares the representations of the inputs and of the same inputs with slightly perturbed "
        "images (1 = unchanged)."
    )
    lines += ["", "| task | variant | stability per layer (shuffled baseline) |", "|---|---|---|"]
    for task, result in results["tasks"].items():
        representations = result["representations"]
        for name in variants:
            pairs = zip(
                representations["stability"][name], representations["stability_baseline_p95"][name], strict=True
            )
            lines.append(f"| {task} | {name} | {', '.join(f'{v:.3f} ({b:.3f})' for v, b in pairs)} |")
    lines += [
        "",
        "| task | pair | CKA at matched relative depths, first to last layer (shuffled baseline) |",
        "|---|---|---|",
    ]
    for task, result in results["tasks"].items():
        for pair, cells in result["representations"]["between_matched_depths"].items():
            shown = ", ".join(f"{c['cka']:.3f} ({c['baseline_p95']:.3f})" for c in cells)
            lines.append(f"| {task} | {pair} | {shown} |")
    lines += ["", f"![cka](plots/{plots['cka']})", "", "## Relevancy", ""]
    lines.append(
        "Share of the first answer token's relevance (Chefer et al. 2021) that lies on image tokens: does the model "
        "look at the image?"
    )
    lines += ["", "| task | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for task, result in results["tasks"].items():
        shares = [result["relevancy"][name]["image_share"] for name in variants]
        lines.append(f"| {task} | " + " | ".join("n/a" if s is None else f"{s:.1%}" for s in shares) + " |")
    lines += ["", f"![relevancy](plots/{plots['relevancy']})"]
    structured = {task: result["parse_rate"] for task, result in results["tasks"].items() if "parse_rate" in result}
    if structured:
        lines += ["", "## Structured output", "", "Share of answers that parse into the structure the task asks for:"]
        for task, rates in structured.items():
            lines += ["", f"{task}:", ""] + [f"- {name}: {format_interval(value)}" for name, value in rates.items()]
    if "ablations" in results:
        lines += [
            "",
            "## Ablation effects",
            "",
            f"Change in the probability of the correct answer vs `{manifest['baseline']}`:",
            "",
        ]
        for factor, by_task in results["ablations"].items():
            for task, effect in by_task.items():
                lines.append(
                    f"- {factor} on {task}: {format_interval(effect)}, p = {format_p(effect['p_value'])}, "
                    f"Holm-adjusted p = {format_p(effect['p_adjusted'])}"
                )
        lines += ["", f"![ablations](plots/{plots['ablations']})"]
    lines += ["", "## Findings", ""] + _findings(results, variants)
    layout = StudyLayout(study_dir)
    layout.report.write_text("\n".join(lines) + "\n")
    return layout.report


ALPHA = 0.05


def _findings(results: dict[str, Any], variants: list[str]) -> list[str]:
    """What the numbers support, in words: a difference only where its Holm-adjusted p is below ALPHA, a "best"
    variant only where it beats every other one so, and what a single training run cannot tell."""
    seeds = results["manifest"].get("seeds") or [results["manifest"]["seed"]]
    findings = []
    for task, result in results["tasks"].items():
        scores = {name: result["score"][name]["estimate"] for name in variants}
        if all(score == 0 for score in scores.values()):
            findings.append(f"- {task}: every variant scores 0; no variant solves this task, so none is compared.")
            continue
        wins = {name: set() for name in variants}
        for pair, diff in result["differences"].items():
            first, second = pair.split(" - ")
            if diff["p_adjusted"] < ALPHA:
                wins[first if diff["estimate"] > 0 else second].add(second if diff["estimate"] > 0 else first)
        clear = [
            f"{pair}: {format_interval(diff)} (adjusted p = {format_p(diff['p_adjusted'])})"
            for pair, diff in result["differences"].items()
            if diff["p_adjusted"] < ALPHA
        ]
        best = [name for name in variants if len(wins[name]) == len(variants) - 1]
        if best:
            findings.append(f"- {task}: {best[0]} scores higher than every other variant (after Holm correction).")
        if clear:
            findings.append(f"- {task}: differences that survive the correction: " + "; ".join(clear) + ".")
        else:
            findings.append(
                f"- {task}: no difference between variants survives the Holm correction "
                f"({results['comparisons']['size']} comparisons); the data do not rank them."
            )
    if len(seeds) < 2:
        findings.append(
            "- Caveat: one training run per variant (seed "
            f"{seeds[0]}): the intervals cover the sampling of items, not the variance between training runs, "
            "so a difference here may not survive another seed."
        )
    return findings


__all__ = ["analyse", "build_report"]
