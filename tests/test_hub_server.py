"""The fake Hub of `hub_server.py` against the real huggingface_hub client and transformers, over loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

from hub_server import HubServer, hub_endpoint, hub_environ, hub_server_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def hub(hub_server: HubServer, tmp_path: Path) -> Iterator[HubServer]:
    """The fixture's server with this process pointed at it (offline mode lifted, HF caches under tmp_path)."""
    with hub_endpoint(hub_server.url, home=tmp_path / "hf_home"):
        yield hub_server


def _folder(tmp_path: Path) -> Path:
    """A folder with a text file, a nested file and a binary safetensors file."""
    folder = tmp_path / "upload"
    (folder / "nested").mkdir(parents=True)
    (folder / "notes.txt").write_text("plain text\n")
    (folder / "nested" / "meta.json").write_text(json.dumps({"a": 1}))
    save_file({"weight": torch.randn(4, 3), "bias": torch.arange(3.0)}, str(folder / "weights.safetensors"))
    return folder


def _push(server: HubServer, folder: Path, repo_id: str = "org/repo", private: bool = False) -> str:
    api = HfApi(endpoint=server.url, token=server.token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="upload").oid


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_upload_then_download_gives_identical_bytes(hub: HubServer, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    oid = _push(hub, folder)

    expected = _local_files(folder)
    assert {k: v for k, v in hub.files("org/repo").items() if k != ".gitattributes"} == expected
    assert hub.head("org/repo") == oid
    for name in ("notes.txt", "weights.safetensors", "nested/meta.json"):
        path = hf_hub_download("org/repo", name, revision="main", endpoint=hub.url)
        assert Path(path).read_bytes() == expected[name]
        assert Path(path).is_relative_to(constants.HF_HUB_CACHE)  # the fixture's cache, not the user's
    # Content travelled inside the commit (regular upload mode): no LFS, no Xet round-trip.
    paths = [r["path"] for r in hub.requests]
    assert not [p for p in paths if "xet" in p or "lfs" in p or ".git/" in p]
    assert not hub.unhandled and not hub.errors


def test_snapshot_download_gets_every_file(hub: HubServer, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    oid = _push(hub, folder)

    snapshot = Path(snapshot_download("org/repo"))
    assert snapshot.name == oid
    assert _local_files(snapshot) == hub.files("org/repo")


def test_reupload_and_revisions(hub: HubServer, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    first = _push(hub, folder)
    (folder / "notes.txt").write_text("changed\n")
    second = _push(hub, folder)

    assert first != second
    assert hub.commit_titles("org/repo") == ["upload", "upload", "initial commit"]
    # Unchanged files were dropped by the client (preupload returned their oid): only notes.txt was sent again.
    last_commit = hub.requests_to("/commit/")[-1]["body"].decode()
    assert '"notes.txt"' in last_commit and "weights.safetensors" not in last_commit
    old = hf_hub_download("org/repo", "notes.txt", revision=first)
    assert Path(old).read_text() == "plain text\n"
    assert Path(hf_hub_download("org/repo", "notes.txt")).read_text() == "changed\n"


def test_missing_entries_repos_and_revisions_raise_the_hub_errors(hub: HubServer, tmp_path: Path) -> None:
    _push(hub, _folder(tmp_path))

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/repo", "absent.bin")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/absent", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/repo", "notes.txt", revision="no-such-branch")


def test_transformers_round_trip(hub: HubServer, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "tiny")
    _push(hub, tmp_path / "tiny", "org/tiny")

    assert AutoConfig.from_pretrained("org/tiny").hidden_size == 16
    loaded = AutoModelForCausalLM.from_pretrained("org/tiny")
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    assert not hub.errors


def test_writes_need_the_token(hub: HubServer, tmp_path: Path) -> None:
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as missing:
        anonymous.create_repo("org/denied")
    assert missing.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as wrong:
        HfApi(endpoint=hub.url, token="hf_wrong").create_repo("org/denied")
    assert wrong.value.response.status_code == 401
    assert hub.repo_ids() == []

    _push(hub, _folder(tmp_path))
    with pytest.raises(HfHubHTTPError) as upload:
        anonymous.upload_folder(folder_path=_folder(tmp_path / "again"), repo_id="org/repo")
    assert upload.value.response.status_code == 401
    assert hub.commit_titles("org/repo") == ["upload", "initial commit"]


def test_private_repo_needs_the_token_to_read(hub: HubServer, tmp_path: Path) -> None:
    _push(hub, _folder(tmp_path), "org/secret", private=True)

    with pytest.raises(RepositoryNotFoundError) as download:
        hf_hub_download("org/secret", "notes.txt", token=False)
    assert download.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=False).model_info("org/secret")
    assert Path(hf_hub_download("org/secret", "notes.txt", token=hub.token)).read_text() == "plain text\n"
    assert HfApi(endpoint=hub.url, token=hub.token).model_info("org/secret").private


def test_token_never_lands_in_stored_files(hub: HubServer, tmp_path: Path) -> None:
    _push(hub, _folder(tmp_path))

    token = hub.token.encode()
    assert all(token not in content for content in hub.files("org/repo").values())
    assert all(token not in path.read_bytes() for path in hub.root.rglob("*") if path.is_file())
    # ...while it did travel where it belongs, in the Authorization header of the writes.
    commit = hub.requests_to("/commit/")[-1]
    assert commit["headers"]["authorization"] == f"Bearer {hub.token}"
    assert token not in commit["body"]


def test_fixture_alone_keeps_the_suite_offline(hub_server: HubServer) -> None:
    # The client refuses before sending anything: tests must opt in with `hub_endpoint`.
    with pytest.raises(OfflineModeIsEnabled):
        HfApi(endpoint=hub_server.url, token=hub_server.token).create_repo("org/offline")
    assert hub_server.requests == []


def test_hub_endpoint_restores_offline_mode_and_endpoint(tmp_path: Path) -> None:
    before = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, os.environ.get("HF_HUB_OFFLINE"))
    with HubServer(root=tmp_path / "srv") as server, hub_endpoint(server.url, home=tmp_path / "home") as home:
        assert server.url == constants.ENDPOINT and not constants.is_offline_mode()
        assert str(home / "hub") == constants.HF_HUB_CACHE and os.environ["HF_ENDPOINT"] == server.url
    after = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, os.environ.get("HF_HUB_OFFLINE"))
    assert after == before


def test_server_stops_cleanly_and_keeps_its_repos(tmp_path: Path) -> None:
    with HubServer(root=tmp_path / "srv") as server, hub_endpoint(server.url, home=tmp_path / "home"):
        _push(server, _folder(tmp_path))
        files = server.files("org/repo")
    assert not server._thread.is_alive()
    with HubServer(root=tmp_path / "srv") as again:
        assert again.files("org/repo") == files


def test_subprocess_pull_with_hub_environ(hub: HubServer, tmp_path: Path) -> None:
    _push(hub, _folder(tmp_path))
    script = textwrap.dedent(
        """
        from huggingface_hub import hf_hub_download
        print(open(hf_hub_download("org/repo", "notes.txt"), encoding="utf-8").read(), end="")
        """
    )
    env = hub_environ(hub.url, tmp_path / "child_home")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "plain text\n"
    assert (tmp_path / "child_home" / "hub" / "models--org--repo").is_dir()


def test_tiny_checkpoint_with_tokenizer_round_trip(hub: HubServer, tiny_lm) -> None:
    from transformers import AutoTokenizer

    local = tiny_lm("llama3")
    _push(hub, local, "org/tiny-llama3")

    # Tokenizer loading lists the repo tree (additional_chat_templates/ answers EntryNotFound) and probes optional
    # files by HEAD: every miss must be a clean EntryNotFound, not a crash.
    remote = AutoTokenizer.from_pretrained("org/tiny-llama3")
    text = "a small test sentence"
    assert remote(text)["input_ids"] == AutoTokenizer.from_pretrained(local)(text)["input_ids"]
    assert not hub.unhandled and not hub.errors
