"""The real lmms-eval CLI (its own environment: tests/harnesses/lmms_eval/setup.sh) scores llava-swap models offline.

The default recipe's model, trained here (about a minute), on its own `shapes` test items through the task file
`write_lmms_eval_task` writes: lmms-eval with our `llava_swap` plugin (batched) on the llava-swap folder, and its stock
`llava_hf` on the native export, give the answers and the score of `llava-swap evaluate`. llava_hf is given 32 new
tokens where evaluate stops at 8, so any answer that ran on past its end of turn would differ.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harnesses import harness_python
from llava_swap.integrations.lmms_eval_tasks import write_lmms_eval_task

pytestmark = [pytest.mark.lmms_eval, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor, export_hf_llava
    from llava_swap.recipes import Recipe, default_recipe
    from llava_swap.training import run_recipe

    out = tmp_path_factory.mktemp("lmms") / "run"
    recipe = default_recipe().to_dict()
    recipe.update(output_dir=str(out), report_to=[])
    run_recipe(Recipe.from_dict(recipe))
    model, processor = LlavaSwapForCausalLM.from_pretrained(out), LlavaSwapProcessor.from_pretrained(out)
    export_hf_llava(model, processor, out.parent / "native")
    return out


def _run(python: str, model: str, model_args: str, task_dir, out, *extra: str) -> subprocess.CompletedProcess:
    command = [python, "-m", "lmms_eval", "eval", "--model", model, "--model_args", model_args]
    command += ["--tasks", "llava_swap_shapes", "--include_path", str(task_dir), "--output_path", str(out)]
    # DEBUG: lmms-eval exits 0 after an error at any other verbosity.
    command += ["--log_samples", "--verbosity", "DEBUG", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(out / "hf_home")}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def _lmms_eval(python: str, model: str, model_args: str, task_dir, out, *extra: str) -> list[dict]:
    result = _run(python, model, model_args, task_dir, out, *extra)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (samples,) = out.rglob("*_samples_llava_swap_shapes.jsonl")
    return sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])


def test_lmms_eval_scores_our_models_as_llava_swap_evaluate_does(trained, tmp_path):
    python = harness_python("LLAVA_SWAP_LMMS_EVAL_PYTHON", "lmms-eval")
    task_dir = write_lmms_eval_task(trained / "data", "shapes").parent
    ours = [json.loads(line) for line in (trained / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert 0.3 < sum(p["score"] for p in ours) / len(ours) < 1.0  # a model that learned something, not everything

    plugin = _lmms_eval(
        python, "llava_swap", f"pretrained={trained},device=cpu", task_dir, tmp_path / "plugin", "--batch_size", "16"
    )
    stock = _lmms_eval(
        python,
        "llava_hf",
        f"pretrained={trained.parent / 'native'},device=cpu,device_map=cpu",
        task_dir,
        tmp_path / "llava_hf",
        "--gen_kwargs",
        "max_new_tokens=32",
    )
    for samples in (plugin, stock):
        assert len(samples) == len(ours)
        assert [s["item"]["id"] for s in samples] == [p["id"] for p in ours]
        assert [s["filtered_resps"].strip() for s in samples] == [p["prediction"] for p in ours]
        assert [s["score"] for s in samples] == [p["score"] for p in ours]


def test_lmms_eval_run_asking_our_model_to_sample_fails_naming_the_setting(trained, tmp_path):
    """Greedy only, and said so: never a silently different decoding (or an empty answer)."""
    python = harness_python("LLAVA_SWAP_LMMS_EVAL_PYTHON", "lmms-eval")
    task_dir = write_lmms_eval_task(trained / "data", "shapes").parent
    extra = ("--gen_kwargs", "do_sample=True,temperature=0.7", "--limit", "2")
    result = _run(python, "llava_swap", f"pretrained={trained},device=cpu", task_dir, tmp_path, *extra)
    assert result.returncode != 0
    assert "llava_swap generates greedily" in result.stdout + result.stderr
    assert "temperature=0.7" in result.stdout + result.stderr
