"""The controlled study: train several backbones the same way, evaluate them on the same items, keep every record.

A manifest (`StudyConfig`, YAML) fixes what must not vary: the vision encoder, the data, the recipe and the training
budget, counted in examples so that backbones with different tokenizers see the same images and answers. It lists
the variants (LLM backbones, and optionally ablations: no connector pretraining, another vision encoder, another LM
size) and the training seeds. Seeds are an axis of the study: every variant is trained once per seed in `seeds`
(the seed of the initialisation of the new rows and the projector, and of the data order), on data generated once
with `data_seed`, so the variance between training runs can be told apart from the sampling of items. A manifest
with the former single `seed: S` means `seeds: [S]` and `data_seed: S`.

For each (variant, seed) the study trains both stages with `training.run_recipe` into
`variants/<name>/seed-<seed>/`, evaluates every task's held-out items and stores per-instance records, answer
probabilities, pooled hidden states and relevancy maps. A finished run whose resolved recipe is unchanged is reused
when the study runs again, so a changed manifest entry retrains only that variant and an added seed trains only the
new runs. `report.build_report` turns the stored records into `results.json`, `report.md` and plots.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .recipes import Recipe, default_recipe
from .records import RUN_RECORD, StudyLayout, TaskEvalLayout

logger = logging.getLogger(__name__)

# Training items of a task `train_per_task` leaves out: about one pass of the default finetuning budget (30,000
# examples), since a tiny LM generalises from many distinct items better than from several epochs of a few (on
# VQA-Scene, 30,000 items seen once scored 0.53 where 4,000 seen about 7 times scored 0.43). VQA-Scene gets the most:
# its answers are short (cheap) and tying them to the image takes a tiny LM the most examples.
DEFAULT_TRAIN_ITEMS = {"vqa_scene": 20000, "seismic_description": 4000, "seismic_coordinates": 6000}
DEFAULT_TRAIN = 1000  # any other task
# Test items of a task `test_per_task` leaves out. VQA-Scene's are cheap to answer (one word) and its differences
# from chance are small, so it gets the items that give its comparisons power (a 95% interval of about +-0.04).
DEFAULT_TEST_ITEMS = {"vqa_scene": 1000}
DEFAULT_TEST = 200  # any other task
DEFAULT_TASKS = ("vqa_scene", "seismic_description", "seismic_coordinates")
VARIANT_DONE = RUN_RECORD  # a run's record, written when it finished


@dataclass
class Variant:
    name: str = field(metadata={"help": "Folder and label of the variant."})
    language_model: str | None = field(default=None, metadata={"help": "LLM (Hub id, local dir or tiny:<family>)."})
    vision_model: str | None = field(default=None, metadata={"help": "Override the study's vision encoder."})
    pretrain: bool = field(default=True, metadata={"help": "False: the 'no connector pretraining' ablation."})


@dataclass
class StudyConfig:
    name: str = "default-study"
    output_dir: str = "outputs/study"
    # Training seeds (initialisation of the new rows and the projector, data order): every variant runs once per seed.
    seeds: list[int] = field(default_factory=lambda: [0])
    data_seed: int = 0  # the generated data (and the analyses' resampling): the same for every training seed
    # Pretrained on the synthetic images (tiny/pretraining.py): the random tiny CLIP cannot see shape or position,
    # and a study on it would compare LLMs on tasks no model can solve.
    vision_model: str = "tiny:clip-pretrained"
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    # Training items: one number for every task, or one per task ({task: n}); a task left out (or every task, when
    # unset) gets its DEFAULT_TRAIN_ITEMS entry.
    train_per_task: int | dict[str, int] | None = None
    test_per_task: int | dict[str, int] | None = None  # the same, with DEFAULT_TEST_ITEMS
    image_size: int = 32
    pretrain_examples: int = 2000
    finetune_examples: int = 30000
    # Overrides of the default recipe's stage settings: common keys for both stages, or under `pretrain:` / `finetune:`.
    recipe: dict[str, Any] = field(default_factory=dict)
    torch_dtype: str | None = None
    variants: list[Variant] = field(default_factory=list)
    baseline: str | None = None
    ablations: dict[str, str] = field(default_factory=dict)  # factor -> the variant differing only in it
    analysis_items: int = 32  # items per task for representations and relevancy
    relevancy_examples: int = 3

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "study") -> StudyConfig:
        values = _single_seed(dict(values), source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}.")
        variants = []
        for index, variant in enumerate(values.pop("variants", []) or []):
            extra = sorted(set(variant) - {f.name for f in dataclasses.fields(Variant)})
            if extra or "name" not in variant:
                raise ValueError(f"{source}: variants[{index}]: needs a name; unknown field(s) {extra}.")
            variants.append(Variant(**variant))
        config = cls(**values, variants=variants)
        config.validate(source)
        return config

    @classmethod
    def from_yaml(cls, path) -> StudyConfig:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Study manifest {path} does not exist; the shipped ones are in recipes/configs/.")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {}, str(path))

    def with_seeds(self, seeds: list[int], source: str = "--seeds") -> StudyConfig:
        """The same study with other training seeds (the data seed stays)."""
        changed = dataclasses.replace(self, seeds=list(seeds))
        changed.validate(source)
        return changed

    def train_items(self, task: str) -> int:
        """How many training items `task` gets."""
        return _per_task(self.train_per_task, task, DEFAULT_TRAIN_ITEMS, DEFAULT_TRAIN)

    def test_items(self, task: str) -> int:
        """How many test items `task` gets."""
        return _per_task(self.test_per_task, task, DEFAULT_TEST_ITEMS, DEFAULT_TEST)

    def validate(self, source: str = "study") -> None:
        from .tasks import get_task

        for task in self.tasks:
            get_task(task)
        # A task needs one training item, and two test items: image dependence swaps images between test items
        for name, items, least in (("train_per_task", self.train_items, 1), ("test_per_task", self.test_items, 2)):
            given = getattr(self, name)
            if not (given is None or isinstance(given, int | dict)):
                raise ValueError(f"{source}: {name} must be a number or one per task ({{task: n}}); got {given!r}.")
            if isinstance(given, dict):
                unknown = sorted(set(given) - set(self.tasks))
                if unknown:
                    raise ValueError(f"{source}: {name} names {unknown}, which are not among tasks {self.tasks}.")
            for task in self.tasks:
                count = items(task)
                if isinstance(count, bool) or not isinstance(count, int) or count < least:
                    raise ValueError(
                        f"{source}: {name} for {task} must be an integer of at least {least}; got {count!r}."
                    )
        _check_seeds(self.seeds, self.data_seed, source)
        names = [variant.name for variant in self.variants]
        if len(names) < 2:
            raise ValueError(f"{source}: a study compares at least two variants; got {names}.")
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: variant names must be unique; got {names}.")
        for variant in self.variants:
            if variant.language_model is None:
                raise ValueError(f"{source}: variant {variant.name!r} names no language_model.")
        for label, name in [("baseline", self.baseline), *self.ablations.items()]:
            if name is not None and name not in names:
                raise ValueError(f"{source}: {label} refers to {name!r}, which is not a variant ({names}).")
        if self.ablations and self.baseline is None:
            raise ValueError(f"{source}: ablations need a baseline variant to compare with.")


def _per_task(given: int | dict[str, int] | None, task: str, defaults: dict[str, int], fallback: int) -> int:
    """One number for every task, or one per task ({task: n}) with `defaults` (else `fallback`) for the rest."""
    if isinstance(given, int) and not isinstance(given, bool):
        return given
    return (given if isinstance(given, dict) else {}).get(task, defaults.get(task, fallback))


def _single_seed(values: dict[str, Any], source: str) -> dict[str, Any]:
    """The former manifest field `seed: S` (one training run, the same seed for the data) as `seeds: [S]` and
    `data_seed: S`, so a one-seed manifest gives the numbers it gave before."""
    if "seed" not in values:
        return values
    if "seeds" in values:
        raise ValueError(
            f"{source}: give either `seed` (one training run; also the data seed) or `seeds` (the training seeds, "
            "with `data_seed` for the data), not both."
        )
    seed = values.pop("seed")
    values.setdefault("data_seed", seed)
    return {**values, "seeds": [seed]}


def _check_seeds(seeds: Any, data_seed: Any, source: str) -> None:
    def is_seed(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(seeds, list) or not seeds or not all(is_seed(seed) for seed in seeds):
        raise ValueError(f"{source}: seeds must be a non-empty list of non-negative integers; got {seeds!r}.")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"{source}: seeds must be unique; {repeated} repeated in {seeds}.")
    if not is_seed(data_seed):
        raise ValueError(f"{source}: data_seed must be a non-negative integer; got {data_seed!r}.")


def default_study() -> StudyConfig:
    """Tiny LLaMA-2-, LLaMA-3- and Gemma-style backbones with the pretrained tiny CLIP on the three synthetic tasks,
    each trained with three seeds on one set of data. (The tiny LLaMA-1 shares LLaMA-2's weights and tokenizer, so
    comparing the two says little; `study-back-to-the-barn.yaml` compares the real LLaMA-1/2/3.)"""
    return StudyConfig.from_dict(
        {
            "seeds": [0, 1, 2],
            "data_seed": 0,
            "variants": [
                {"name": "llama2", "language_model": "tiny:llama2"},
                {"name": "llama3", "language_model": "tiny:llama3"},
                {"name": "gemma", "language_model": "tiny:gemma"},
            ],
            "baseline": "llama3",
        },
        "default study",
    )


# ---------------------------------------------------------------------------------------------------------------------


def variant_recipe(study: StudyConfig, variant: Variant, data: dict[str, Path], out: Path, *, seed: int) -> Recipe:
    """The training recipe of one run, `variant` trained with `seed`: for a given seed, the same data, order,
    initialisation seed, budget and hyperparameters for every variant."""
    recipe = default_recipe().to_dict()
    layout = StudyLayout(out)
    recipe.update(
        name=f"{study.name}/{variant.name}/seed-{seed}", output_dir=str(layout.variant(variant.name, seed)), seed=seed
    )
    recipe["report_to"] = []
    # One cache for the whole study: the backbones share the encoder, so each image is encoded once in all.
    recipe["vision_feature_cache"] = str(layout.feature_cache)
    recipe["model"].update(
        language_model=variant.language_model, vision_model=variant.vision_model or study.vision_model
    )
    recipe["data"] = {
        "train": str(data["train"]),
        "pretrain": str(data["pretrain"]),
        "image_root": str(Path(data["train"]).parent),
        "task": None,
        "on_bad_record": "error",
    }
    recipe["model"]["torch_dtype"] = study.torch_dtype
    stages = copy.deepcopy(recipe["stages"])
    common = {key: value for key, value in study.recipe.items() if key not in ("pretrain", "finetune")}
    for stage in stages:
        stage.update(common)
        stage.update(study.recipe.get(stage["stage"], {}))
        examples = study.pretrain_examples if stage["stage"] == "pretrain" else study.finetune_examples
        # The budget is examples, not epochs or tokens: every backbone sees the same images and answers.
        global_batch = stage.get("global_batch_size") or (
            stage["per_device_train_batch_size"] * stage["gradient_accumulation_steps"] * _processes()
        )
        stage["max_steps"] = math.ceil(examples / global_batch)
        stage["save_steps"] = stage["max_steps"]
    recipe["stages"] = stages if variant.pretrain else [s for s in stages if s["stage"] != "pretrain"]
    return Recipe.from_dict(recipe, f"study variant {variant.name}")


def _processes() -> int:
    from accelerate import PartialState

    from .distributed import no_accelerator

    return PartialState(cpu=no_accelerator()).num_processes


def variant_key(recipe: Recipe, data: dict[str, Path]) -> str:
    """Hash of a run's resolved recipe (its seed included) and data files: when it changes, the run is retrained.

    Where the study lives is left out (output and data paths), so a moved or copied study is still reused.
    """
    settings = recipe.to_dict()
    settings.pop("output_dir")
    settings.pop("vision_feature_cache")  # a location too; cached features are keyed by their own content
    # Locations again, and how many processes tokenize: neither changes what is trained
    unchanged = ("train", "pretrain", "image_root", "dataset_num_proc")
    settings["data"] = {k: v for k, v in settings["data"].items() if k not in unchanged}
    vision = recipe.model.vision_model
    if vision.startswith("tiny:"):  # a trained tiny encoder is named, not versioned, by its source string
        from . import tiny

        settings["vision_build"] = tiny.build_key(vision.split(":", 1)[1])
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for split in sorted(data):
        digest.update(Path(data[split]).read_bytes())
    return digest.hexdigest()


# Bump when evaluate_variant stores something new: finished runs are then evaluated again, not retrained.
EVALUATION_VERSION = 2  # 2: image dependence


def evaluation_key(study: StudyConfig, folders: dict[str, Path]) -> str:
    """Hash of what a run's evaluation depends on beside its weights: the test items, the analysis settings and
    EVALUATION_VERSION. When only this changes, a finished run is evaluated again without retraining."""
    settings = {
        "version": EVALUATION_VERSION,
        "analysis_items": study.analysis_items,
        "relevancy_examples": study.relevancy_examples,
        "data_seed": study.data_seed,  # seeds the image perturbation and the swapped images
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for task in sorted(folders):
        digest.update(task.encode())
        digest.update((Path(folders[task]) / "test.json").read_bytes())
    return digest.hexdigest()


def data_key(study: StudyConfig) -> str:
    """What the generated data depend on: when it is unchanged, the data folder is kept as it is."""
    settings = {
        "tasks": list(study.tasks),
        "train": {task: study.train_items(task) for task in study.tasks},
        "test": {task: study.test_items(task) for task in study.tasks},
        "image_size": study.image_size,
        "data_seed": study.data_seed,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def prepare_data(study: StudyConfig, out: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Generates every task's data once, with `data_seed`, and merges the training splits: `(train/pretrain files,
    task folders)`. Every training seed trains on these same files.

    Jobs of one study running at once (`--only`) share the folder: one generates under a file lock, and the others,
    finding it marked with the same `data_key`, leave it untouched (never rewriting files another job reads).
    """
    from filelock import FileLock

    data_dir = StudyLayout(out).data
    data_dir.mkdir(parents=True, exist_ok=True)
    marker, key = data_dir / "data.json", data_key(study)
    folders = {task: data_dir / task for task in study.tasks}
    merged = {name: data_dir / f"{name}.json" for name in ("train", "pretrain")}
    with FileLock(str(data_dir / ".lock")):
        if not marker.exists() or json.loads(marker.read_text()).get("key") != key:
            marker.unlink(missing_ok=True)
            _generate(study, data_dir)
            marker.write_text(json.dumps({"key": key}))
    return merged, folders


def _generate(study: StudyConfig, data_dir: Path) -> None:
    from .tasks import get_task

    folders, train, pretrain = {}, [], []
    for task in study.tasks:
        folder = data_dir / task
        get_task(task).generate(
            folder,
            n_train=study.train_items(task),
            n_val=1,
            n_test=study.test_items(task),
            seed=study.data_seed,
            image_size=study.image_size,
        )
        folders[task] = folder
        for name, bucket in (("train", train), ("pretrain", pretrain)):
            for record in json.loads((folder / f"{name}.json").read_text()):
                # Relative to the data folder, so the merged files (and the fingerprint) do not depend on where
                # the study lives.
                bucket.append({**record, "image": f"{task}/{record['image']}"})
    for name, bucket in (("train", train), ("pretrain", pretrain)):
        (data_dir / f"{name}.json").write_text(json.dumps(bucket, indent=1, sort_keys=True))


def study_jobs(study: StudyConfig) -> list[tuple[Variant, int]]:
    """Every (variant, training seed) run, seed by seed: an interrupted study has complete seeds to compare first."""
    return [(variant, seed) for seed in study.seeds for variant in study.variants]


def job_name(variant: Variant, seed: int) -> str:
    """How `--only` names one run: NAME@SEED."""
    return f"{variant.name}@{seed}"


def select_jobs(study: StudyConfig, only: list[str]) -> list[tuple[Variant, int]]:
    """The runs `--only` names: NAME@SEED for one run, NAME for every seed of a variant."""
    jobs = study_jobs(study)
    chosen = []
    for spec in only:
        name, _, seed = spec.partition("@")
        matches = [job for job in jobs if job[0].name == name and (not seed or str(job[1]) == seed)]
        if not matches:
            valid = ", ".join(job_name(*job) for job in jobs)
            raise ValueError(f"--only {spec}: no such run in this study; its runs are {valid} (or a variant name).")
        chosen += [job for job in matches if job not in chosen]
    return chosen


def plan(study: StudyConfig, out: str, config: str | None = None, seeds: list[int] | None = None) -> list[str]:
    """One command line per run (to spread them over a cluster: a Slurm array, a job set, shell loops), then the one
    that merges them into the report."""
    options = (f" --config {shlex.quote(config)}" if config else "") + f" --out {shlex.quote(str(out))}"
    if seeds is not None:
        options += " --seeds " + " ".join(map(str, seeds))
    commands = [f"llava-swap study{options} --only {job_name(*job)}" for job in study_jobs(study)]
    return commands + [f"llava-swap analyze --study {shlex.quote(str(out))}"]


def run_study(
    study: StudyConfig, out_dir: str | None = None, analyze: bool = True, only: list[str] | None = None
) -> dict[str, dict[int, str]]:
    """Trains and evaluates every variant with every seed (reusing finished runs), then writes results.json and
    report.md. `only` (NAME@SEED or NAME) runs just those runs, and leaves the report to `llava-swap analyze`.
    Returns {variant: {seed: "reused", "re-evaluated" or "trained"}} for the runs it handled."""
    out = Path(out_dir or study.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = StudyLayout(out)
    # Resolved, so the report states what was trained whatever the defaults of a later release; written whole by
    # one replace, since jobs of one study may write it at once.
    resolved = {
        **dataclasses.asdict(study),
        "train_per_task": {task: study.train_items(task) for task in study.tasks},
        "test_per_task": {task: study.test_items(task) for task in study.tasks},
    }
    partial = layout.manifest.with_name(f".{layout.manifest.name}.{os.getpid()}")
    partial.write_text(json.dumps(resolved, indent=2))
    os.replace(partial, layout.manifest)
    runs = study_jobs(study) if only is None else select_jobs(study, only)
    data, folders = prepare_data(study, out)
    status: dict[str, dict[int, str]] = {variant.name: {} for variant, _ in runs}
    for variant in study.variants:
        _warn_if_unseeded(layout, variant.name)
    for index, (variant, seed) in enumerate(runs, start=1):
        recipe = variant_recipe(study, variant, data, out, seed=seed)
        label = f"[study] {variant.name} seed {seed} (run {index}/{len(runs)})"
        status[variant.name][seed] = run_variant(study, variant, recipe, data, folders, label=label)
    if analyze and only is None:
        from .report import build_report

        build_report(out)
    return status


def _warn_if_unseeded(layout: StudyLayout, name: str) -> None:
    legacy = layout.variant_root(name) / VARIANT_DONE
    if legacy.exists():
        logger.warning(
            f"{legacy.parent} holds a run from before seeds were a study axis; it is not reused (runs now live in "
            f"{layout.variant_root(name)}/seed-<seed>/): its files outside the seed-* folders can be deleted"
        )


def run_variant(study: StudyConfig, variant: Variant, recipe: Recipe, data, folders, label: str = "") -> str:
    """Trains and evaluates one run (`recipe` holds its seed and folder) unless an identical finished run exists;
    returns 'reused', 're-evaluated' (the same training, but other test items or analysis settings) or 'trained'."""
    from .training import run_recipe

    run_dir = Path(recipe.output_dir)
    label = label or f"[study] {variant.name} seed {recipe.seed}"
    key, evaluation = variant_key(recipe, data), evaluation_key(study, folders)
    done = run_dir / VARIANT_DONE
    finished = json.loads(done.read_text()) if done.exists() else {}
    if finished.get("fingerprint") == key:
        if finished.get("evaluation") == evaluation:
            logger.info(f"{label}: finished before with the same manifest entry: reused")
            return "reused"
        logger.info(f"{label}: trained before with the same manifest entry; evaluating it again")
        shutil.rmtree(TaskEvalLayout.root(run_dir), ignore_errors=True)
        evaluate_variant(study, run_dir, folders)
        done.write_text(json.dumps({**finished, "evaluation": evaluation}, indent=2))
        return "re-evaluated"
    if run_dir.exists():  # a changed entry or an interrupted run: start this run afresh
        shutil.rmtree(run_dir)
    logger.info(f"{label}: training {variant.language_model} + {variant.vision_model or study.vision_model}")
    summary = run_recipe(recipe)
    evaluate_variant(study, run_dir, folders)
    record = {
        "fingerprint": key,
        "evaluation": evaluation,
        "variant": dataclasses.asdict(variant),
        "seed": recipe.seed,
        "train": summary.to_dict(),
    }
    done.write_text(json.dumps(record, indent=2))
    return "trained"


def evaluate_variant(study: StudyConfig, variant_dir: Path, folders: dict[str, Path]) -> None:
    """Per task, for one run (`variant_dir`): predictions.jsonl + metrics.json, answer probabilities; then
    representations, relevancy and image dependence (with the blank-image relevancy control). The perturbation of
    the images and the swapped images use `data_seed`, the same for every run."""
    import numpy as np
    import torch

    from .analysis.image_dependence import image_dependence, relevancy_blank_share
    from .analysis.relevancy import relevancy
    from .analysis.representations import pooled_hidden_states
    from .data.images import with_images
    from .evaluation import answer_probabilities, evaluate_rows, prompt_messages, write_results
    from .modeling_llava_swap import LlavaSwapForCausalLM
    from .processing_llava_swap import LlavaSwapProcessor
    from .tasks import get_task

    model = LlavaSwapForCausalLM.from_pretrained(variant_dir)
    processor = LlavaSwapProcessor.from_pretrained(variant_dir)
    for task_name, folder in folders.items():
        task = get_task(task_name)
        rows = [record.to_row() for record in task.load(folder, "test").records]
        result = evaluate_rows(model, processor, rows, task, batch_size=16, progress=False)
        for record, probability in zip(result.records, answer_probabilities(model, processor, rows), strict=True):
            record.prob_correct = probability
        target = TaskEvalLayout.for_variant(variant_dir, task_name)
        write_results(result, target.folder, extra={"task": task_name})

        # Representations: the LM's pooled hidden states on the same prompts for every variant, and on the same
        # prompts with slightly perturbed images (stability): the same noise for every variant and training seed.
        sample = rows[: study.analysis_items]
        conversations = [with_images(prompt_messages(row), row["images"]) for row in sample]
        inputs = processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True, "padding_side": "left"},
        )
        generator = torch.Generator().manual_seed(study.data_seed)
        noisy = dict(inputs)
        noisy["pixel_values"] = inputs["pixel_values"] + 0.05 * torch.randn(
            inputs["pixel_values"].shape, generator=generator
        )
        layers = pooled_hidden_states(model, dict(inputs))
        perturbed = pooled_hidden_states(model, noisy)
        np.savez(target.hidden_states, *layers)
        np.savez(target.hidden_states_perturbed, *perturbed)

        maps = []
        for row in rows[: study.relevancy_examples]:
            single = processor.apply_chat_template(
                with_images(prompt_messages(row), row["images"]),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
            explained = relevancy(model, dict(single))
            maps.append({"id": row["id"], "image": str(row["images"][0]), **explained})
        target.relevancy.write_text(json.dumps(maps))

        # Does the answer depend on the image? Counterfactually, on every test item; and the relevancy share the
        # same prompts get with blank images, the control the real share is read against.
        real = [record.prob_correct for record in result.records]
        dependence = image_dependence(model, processor, rows, seed=study.data_seed, real=real)
        targets = [item["target_token"] for item in maps]  # the blank control explains the same logits
        dependence["relevancy_blank_share"] = relevancy_blank_share(
            model, processor, rows[: study.relevancy_examples], targets
        )
        target.image_dependence.write_text(json.dumps(dependence))


__all__ = ["StudyConfig", "Variant", "default_study", "prepare_data", "run_study", "variant_recipe"]
