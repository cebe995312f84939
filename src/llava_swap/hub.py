"""Model cards generated from the training record, and push of trained variants to the Hugging Face Hub.

A card is rendered from the shipped template (`templates/model_card.md`) with huggingface_hub's `ModelCard`, from
what a trained output folder holds: its config (lineage: backbones, family, projector, feature layer), its
`train_summary.json` (stages, hyperparameters, data, evaluation) and its evaluation's `metrics.json`. The YAML
metadata carries the licence implied by the backbones, `base_model`, tags, `pipeline_tag` and a model-index with every
task metric. `push` uploads the native transformers llava format by default (plain transformers loads it, and vLLM
too where it builds the vision tower), or the llava_swap format when the model cannot be expressed natively. The
token comes from the usual places (argument, `HF_TOKEN`, `hf auth login`) and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .records import TrainingSummary

logger = logging.getLogger(__name__)

# Licence of a backbone, by the start of its Hub id: the card's licence is the most restrictive of the two parts.
LICENCES = (
    ("meta-llama/Meta-Llama-3", "llama3"),
    ("meta-llama/Llama-3", "llama3.1"),
    ("meta-llama/Llama-2", "llama2"),
    ("huggyllama/", "other"),  # LLaMA-1: Meta's non-commercial research licence
    ("google/gemma", "gemma"),
    ("openai/clip", "mit"),
    ("google/siglip", "apache-2.0"),
    ("facebook/dinov2", "apache-2.0"),
)
PERMISSIVE = ("apache-2.0", "mit")


def licence_of(source: str | None) -> str:
    """The licence identifier of a backbone; a local or tiny checkpoint is ours (apache-2.0)."""
    if not source or Path(source).exists() or source.startswith("tiny:"):
        return "apache-2.0"
    return next((licence for prefix, licence in LICENCES if source.startswith(prefix)), "other")


def _hub_id(source: str | None) -> str | None:
    """A Hub repo id, or None for a local path (base_model must name Hub repos)."""
    if not source or Path(source).exists() or source.startswith(("/", ".", "~", "tiny:")):
        return None
    return source if source.count("/") == 1 else None


def _data_hash(out: Path, recipe: dict) -> tuple[str, str]:
    data = recipe.get("data", {})
    files = [data.get(split) for split in ("pretrain", "train")]
    files = [Path(f) for f in files if f] or sorted((out / "data").glob("*.json"))
    digest = hashlib.sha256()
    for path in files:
        if path.exists():
            digest.update(path.read_bytes())
    described = ", ".join(str(path) for path in files) or "not recorded"
    if not data.get("train"):
        described = f"synthetic `{data.get('task') or 'shapes'}` task generated offline ({described})"
    return described, digest.hexdigest()[:16]


def _why_llava_swap_format(out: Path) -> str:
    """Why a folder is in the llava_swap format: it was saved so (and `llava-swap export` converts it), or the native
    llava format cannot express it (the reason transformers' format gives)."""
    from .configuration_llava_swap import LlavaSwapConfig

    try:
        LlavaSwapConfig.from_pretrained(out).to_native()
    except ValueError as error:
        return str(error).split(":")[0]
    return (
        f"as llava-swap saves it; `llava-swap export --model {out.name} --out {out.name}-native` writes transformers' "
        "native llava format, the one vLLM reads"
    )


def card_context(model_dir: str | os.PathLike, repo_id: str | None = None, native: bool = False) -> dict[str, Any]:
    """Everything the card template needs, read from a trained output folder."""
    from .configuration_llava_swap import vision_kind
    from .interop import serving_note

    out = Path(model_dir)
    config = json.loads((out / "config.json").read_text())
    summary = TrainingSummary.read(out / "train_summary.json")
    recipe = summary.recipe
    language = config.get("language_model_name_or_path") or recipe.get("model", {}).get("language_model")
    vision = config.get("vision_model_name_or_path") or recipe.get("model", {}).get("vision_model")
    # Tiny backbones live in the run folder; name them as the recipe did.
    language_label = recipe.get("model", {}).get("language_model") or language
    vision_label = recipe.get("model", {}).get("vision_model") or vision
    stages = recipe.get("stages", [])
    data_line, data_hash = _data_hash(out, recipe)
    evaluation, task = _evaluation_rows(summary)
    calibration = summary.eval.get("calibration")
    vision_config = config.get("vision_config", {})
    vision_type = vision_config.get("model_type", "")
    if vision_kind(vision_type) is None:
        raise ValueError(
            f"{out / 'config.json'}: vision tower {vision_type!r} is none llava-swap knows (CLIP, SigLIP, DINOv2)."
        )
    return {
        "model_name": repo_id.split("/")[-1] if repo_id else out.resolve().name,
        "repo_id": repo_id or str(out),
        "native": native,
        "format_reason": _why_llava_swap_format(out),
        "serving": serving_note(vision_type),
        "vllm_serves": vision_kind(vision_type).vllm_serves,
        "language_model": language_label,
        "vision_model": vision_label,
        "language_hub_id": _hub_id(language_label),
        "vision_hub_id": _hub_id(vision_label),
        "llm_family": config.get("llm_family") or "unknown",
        "chat_template": config.get("chat_template_name") or "unknown",
        "projector": config.get("projector_type", "mlp2x_gelu"),
        "vision_feature_layer": config.get("vision_feature_layer"),
        "select_strategy": config.get("vision_feature_select_strategy"),
        "image_seq_length": config.get("image_seq_length"),
        "patch_size": vision_config.get("patch_size"),
        "image_size_text": f"{vision_config.get('image_size')}x{vision_config.get('image_size')} px",
        "stages": stages,
        "stages_line": " -> ".join(f"{s['name']} ({s['stage']}, language model {s['language_model']})" for s in stages)
        or "not recorded",
        "data_line": data_line,
        "data_hash": data_hash,
        "recipe_name": recipe.get("name", "unknown"),
        "trainable_line": "; ".join(
            f"{name}: " + ", ".join(f"{part} {count:,}" for part, count in parts.items())
            for name, parts in summary.trainable_parameters.items()
        )
        or "not recorded",
        "recipe_changes": summary.recipe_changes,
        "other_settings_line": "; ".join(
            f"{s['name']}: " + ", ".join(f"{key} {value}" for key, value in s["training_args"].items())
            for s in stages
            if s.get("training_args")
        ),
        "train_runtime": float(summary.train_runtime),
        "samples_per_second": float(summary.samples_per_second),
        "final_loss_text": f"{summary.final_loss:.4f}" if summary.final_loss is not None else "n/a",
        "evaluation": evaluation,
        "eval_task": task,
        "eval_n": summary.eval.get("n"),
        "calibration": {k: f"{v:.4f}" for k, v in calibration.items()} if calibration else None,
        "example_question": "What is shown in the image?",
        "tiny": str(language_label).startswith("tiny:") or str(vision_label).startswith("tiny:"),
        "licence_text": licence_of(language_label),
        "metrics": {row["name"]: row["value"] for row in evaluation},
    }


def _evaluation_rows(summary: TrainingSummary) -> tuple[list[dict], str | None]:
    after, before = summary.eval, summary.eval_before
    task = (summary.recipe.get("data") or {}).get("task")
    rows = []
    for name, value in after.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "n":
            previous = before.get(name)
            rows.append(
                {
                    "name": name,
                    "value": float(value),
                    "after": f"{value:.4f}",
                    "before": f"{previous:.4f}" if isinstance(previous, (int, float)) else "n/a",
                }
            )
    return rows, task


def render_card(model_dir: str | os.PathLike, repo_id: str | None = None, native: bool = False):
    """The model card (a `huggingface_hub.ModelCard`) of a trained output folder."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    context = card_context(model_dir, repo_id, native)
    licences = {licence_of(context["language_model"]), licence_of(context["vision_model"])}
    restrictive = sorted(licences - set(PERMISSIVE))
    licence = restrictive[0] if len(restrictive) == 1 else ("other" if restrictive else sorted(licences)[0])
    task_name = context["eval_task"] or "held-out items"
    card_data = ModelCardData(
        language="en",
        license=licence,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=[i for i in (context["language_hub_id"], context["vision_hub_id"]) if i] or None,
        tags=["llava", "llava-swap", "vision-language", f"llm-{context['llm_family']}", context["projector"]],
        datasets=[task_name] if context["eval_task"] else None,
        model_name=context["model_name"],
        eval_results=[
            EvalResult(
                task_type="image-text-to-text",
                dataset_type=task_name,
                dataset_name=task_name,
                metric_type=name,
                metric_name=name,
                metric_value=value,
            )
            for name, value in context["metrics"].items()
        ]
        or None,
    )
    template = resources.files("llava_swap") / "templates" / "model_card.md"
    return ModelCard.from_template(card_data, template_str=template.read_text(), **context)


def write_card(model_dir: str | os.PathLike, repo_id: str | None = None, native: bool = False) -> Path:
    """Writes README.md (the model card) next to the weights; returns its path."""
    path = Path(model_dir) / "README.md"
    render_card(model_dir, repo_id, native).save(path)
    return path


def push(
    model_dir: str | os.PathLike,
    repo_id: str,
    format: str | None = None,  # noqa: A002 (the CLI's word)
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Uploads a trained model with its card; returns the format pushed ('native' or 'llava_swap').

    `format=None` pushes the native transformers llava format when the model can be expressed in it, else the
    llava_swap format; `format="native"` insists (and says why it cannot).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from .interop import export_hf_llava
    from .modeling_llava_swap import LlavaSwapForCausalLM
    from .processing_llava_swap import LlavaSwapProcessor

    if format not in (None, "native", "llava_swap"):
        raise ValueError(f"format={format!r}: use 'native' (transformers' llava) or 'llava_swap'.")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} holds no saved model (no config.json): train or save one first.")
    with tempfile.TemporaryDirectory() as staging:
        chosen = "llava_swap"
        folder = model_dir
        if format != "llava_swap":
            model = LlavaSwapForCausalLM.from_pretrained(model_dir)
            processor = LlavaSwapProcessor.from_pretrained(model_dir)
            try:
                folder = export_hf_llava(model, processor, Path(staging) / "native")
                chosen = "native"
            except ValueError as error:
                if format == "native":
                    raise
                logger.warning(f"pushing the llava_swap format: {error}")
        if chosen == "llava_swap":
            folder = Path(staging) / "llava_swap"
            _copy_model_files(model_dir, folder)
        render_card(model_dir, repo_id, native=chosen == "native").save(folder / "README.md")
        api = HfApi(endpoint=endpoint, token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=commit_message or f"Upload {chosen} checkpoint with llava-swap",
            )
        except OfflineModeIsEnabled as error:
            raise RuntimeError(
                "Cannot push: HF_HUB_OFFLINE=1 is set. Unset it (and log in with `hf auth login` or HF_TOKEN) to push."
            ) from error
        except HfHubHTTPError as error:
            status = getattr(error.response, "status_code", None)
            if status in (401, 403):
                raise PermissionError(
                    f"The Hub refused the push to {repo_id!r} ({status}): log in with `hf auth login`, set HF_TOKEN, "
                    "or pass a token with write access to that namespace."
                ) from error
            raise
        except Exception as error:
            if not _network_failure(error):
                raise
            raise ConnectionError(
                f"Cannot reach the Hub at {api.endpoint} to push {repo_id!r} ({type(error).__name__}: {error}): check "
                "the network connection, any proxy (HTTPS_PROXY) and HF_ENDPOINT, then push again."
            ) from error
    return chosen


def _network_failure(error: BaseException) -> bool:
    """Whether nothing reached the Hub (no connection, DNS, proxy, TLS). huggingface_hub 1.x raises httpx's
    `TransportError`s, 2.x those of httpx2: the same name in both."""
    return isinstance(error, (ConnectionError, TimeoutError)) or any(
        cls.__name__ == "TransportError" for cls in type(error).__mro__
    )


def _copy_model_files(model_dir: Path, folder: Path) -> None:
    """The files that make up a saved model (weights, config, processor): not checkpoints, logs or data."""
    import shutil

    folder.mkdir(parents=True)
    keep = (".json", ".safetensors", ".jinja", ".model", ".txt")
    for item in model_dir.iterdir():
        skipped = item.name in ("train_summary.json", "skipped_records.json", "training_args.bin", "recipe.json")
        if item.is_file() and item.suffix in keep and not skipped:
            shutil.copy2(item, folder / item.name)


__all__ = ["LICENCES", "card_context", "licence_of", "push", "render_card", "write_card"]
