"""The fake Hub of `hub_server.py` against the real huggingface_hub client and transformers, over loopback only.

The test process stays offline (tests/conftest.py): every client runs in a child process started by `run_client`,
with the server's URL in HF_ENDPOINT, and reports back as JSON on its last stdout line or in files under tmp_path.
The server runs in this process, so the tests inspect what it stored and received directly.
"""

from __future__ import annotations

import importlib
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file

from hub_server import HubServer, hub_server_fixture, run_client  # noqa: F401 - the fixture

# Each test starts one or two child processes (about 1 s with huggingface_hub alone, 5 s or more with transformers).
pytestmark = pytest.mark.timeout(180)

# What every child runs first: `push` (the upload the tests share) and `outcome`, which turns an exception into data
# the test can assert on (an exception left uncaught fails `run_client` instead, with the child's traceback).
_CLIENT = '''
import json
import os
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download


def push(folder, repo_id="org/repo", private=False):
    """create_repo + upload_folder with the token run_client put in HF_TOKEN, to the endpoint in HF_ENDPOINT."""
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="upload").oid


def outcome(call, *args, **kwargs):
    """What the call raised: its class (module, qualname) and HTTP status; None when it raised nothing."""
    try:
        call(*args, **kwargs)
    except Exception as error:
        response = getattr(error, "response", None)
        kind = type(error)
        return {"module": kind.__module__, "name": kind.__qualname__, "status": getattr(response, "status_code", None)}
    return None


def read(path):
    return Path(path).read_text()
'''


def _run(hub: HubServer, tmp_path: Path, body: str, **values: Any) -> Any:
    """Run `_CLIENT` then `body` in a child with HF_TOKEN = the server's token and HF_HOME = tmp_path/hf_home.

    Each keyword becomes a variable of the child (paths as strings, everything else by its repr), which spares the
    script f-string escaping. Returns the child's last stdout line, parsed as JSON.
    """
    bindings = "".join(f"{name} = {(str(v) if isinstance(v, Path) else v)!r}\n" for name, v in values.items())
    out = run_client(hub.url, tmp_path / "hf_home", _CLIENT + bindings + textwrap.dedent(body), token=hub.token)
    return json.loads(out.splitlines()[-1])


def _raised(report: dict[str, Any] | None) -> type[BaseException]:
    """The exception class a child's `outcome` reported, imported here so tests can check it with issubclass."""
    assert report is not None, "the call raised nothing"
    return getattr(importlib.import_module(report["module"]), report["name"])


def _folder(tmp_path: Path) -> Path:
    """A folder with a text file, a nested file and a binary safetensors file."""
    folder = tmp_path / "upload"
    (folder / "nested").mkdir(parents=True)
    (folder / "notes.txt").write_text("plain text\n")
    (folder / "nested" / "meta.json").write_text(json.dumps({"a": 1}))
    save_file({"weight": torch.randn(4, 3), "bias": torch.arange(3.0)}, str(folder / "weights.safetensors"))
    return folder


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_upload_then_download_gives_identical_bytes(hub_server: HubServer, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    names = ["notes.txt", "weights.safetensors", "nested/meta.json"]
    result = _run(
        hub_server,
        tmp_path,
        """
        oid = push(folder)
        paths = {name: hf_hub_download("org/repo", name, revision="main") for name in names}
        print(json.dumps({"oid": oid, "paths": paths}))
        """,
        folder=folder,
        names=names,
    )

    expected = _local_files(folder)
    assert {k: v for k, v in hub_server.files("org/repo").items() if k != ".gitattributes"} == expected
    assert hub_server.head("org/repo") == result["oid"]
    assert sorted(result["paths"]) == sorted(names)
    for name, path in result["paths"].items():
        assert Path(path).read_bytes() == expected[name]
        assert Path(path).is_relative_to(tmp_path / "hf_home" / "hub")  # the test's cache, not the user's
    # Content travelled inside the commit (regular upload mode): no LFS, no Xet round-trip.
    paths = [r["path"] for r in hub_server.requests]
    assert not [p for p in paths if "xet" in p or "lfs" in p or ".git/" in p]
    assert not hub_server.unhandled and not hub_server.errors


def test_snapshot_download_gets_every_file(hub_server: HubServer, tmp_path: Path) -> None:
    result = _run(
        hub_server,
        tmp_path,
        """
        oid = push(folder)
        print(json.dumps({"oid": oid, "snapshot": snapshot_download("org/repo")}))
        """,
        folder=_folder(tmp_path),
    )

    snapshot = Path(result["snapshot"])
    assert snapshot.name == result["oid"] == hub_server.head("org/repo")
    assert _local_files(snapshot) == hub_server.files("org/repo")


def test_reupload_and_revisions(hub_server: HubServer, tmp_path: Path) -> None:
    result = _run(
        hub_server,
        tmp_path,
        """
        first = push(folder)
        Path(folder, "notes.txt").write_text("changed\\n")
        second = push(folder)
        old = read(hf_hub_download("org/repo", "notes.txt", revision=first))
        new = read(hf_hub_download("org/repo", "notes.txt"))
        print(json.dumps({"first": first, "second": second, "old": old, "new": new}))
        """,
        folder=_folder(tmp_path),
    )

    assert result["first"] != result["second"] == hub_server.head("org/repo")
    assert hub_server.commit_titles("org/repo") == ["upload", "upload", "initial commit"]
    # Unchanged files were dropped by the client (preupload returned their oid): only notes.txt was sent again.
    last_commit = hub_server.requests_to("/commit/")[-1]["body"].decode()
    assert '"notes.txt"' in last_commit and "weights.safetensors" not in last_commit
    assert result["old"] == "plain text\n" and result["new"] == "changed\n"


def test_missing_entries_repos_and_revisions_raise_the_hub_errors(hub_server: HubServer, tmp_path: Path) -> None:
    result = _run(
        hub_server,
        tmp_path,
        """
        push(folder)
        print(json.dumps({
            "entry": outcome(hf_hub_download, "org/repo", "absent.bin"),
            "repo": outcome(hf_hub_download, "org/absent", "config.json"),
            "revision": outcome(hf_hub_download, "org/repo", "notes.txt", revision="no-such-branch"),
        }))
        """,
        folder=_folder(tmp_path),
    )

    # EntryNotFoundError is also the base of the offline-cache miss: the 404 says the server answered.
    assert issubclass(_raised(result["entry"]), EntryNotFoundError) and result["entry"]["status"] == 404
    assert issubclass(_raised(result["repo"]), RepositoryNotFoundError) and result["repo"]["status"] == 404
    assert issubclass(_raised(result["revision"]), RevisionNotFoundError) and result["revision"]["status"] == 404


def test_transformers_round_trip(hub_server: HubServer, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "tiny")
    result = _run(
        hub_server,
        tmp_path,
        """
        from safetensors.torch import save_file
        from transformers import AutoConfig, AutoModelForCausalLM

        push(folder, "org/tiny")
        hidden_size = AutoConfig.from_pretrained("org/tiny").hidden_size
        loaded = AutoModelForCausalLM.from_pretrained("org/tiny")
        # Cloned: safetensors refuses tensors that share storage (tied weights).
        save_file({k: v.detach().clone().contiguous() for k, v in loaded.state_dict().items()}, out)
        print(json.dumps({"hidden_size": hidden_size}))
        """,
        folder=tmp_path / "tiny",
        out=tmp_path / "pulled.safetensors",
    )

    assert result["hidden_size"] == 16
    expected, actual = model.state_dict(), load_file(tmp_path / "pulled.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    assert not hub_server.errors


def test_writes_need_the_token(hub_server: HubServer, tmp_path: Path) -> None:
    result = _run(
        hub_server,
        tmp_path,
        """
        missing = outcome(HfApi(token=False).create_repo, "org/denied")
        wrong = outcome(HfApi(token="hf_wrong").create_repo, "org/denied")
        push(folder)
        upload = outcome(HfApi(token=False).upload_folder, folder_path=again, repo_id="org/repo")
        print(json.dumps({"missing": missing, "wrong": wrong, "upload": upload}))
        """,
        folder=_folder(tmp_path),
        again=_folder(tmp_path / "again"),
    )

    for refused in ("missing", "wrong", "upload"):
        assert issubclass(_raised(result[refused]), HfHubHTTPError), refused
        assert result[refused]["status"] == 401, refused
    assert hub_server.repo_ids() == ["org/repo"]  # "org/denied" was never created
    assert hub_server.commit_titles("org/repo") == ["upload", "initial commit"]


def test_private_repo_needs_the_token_to_read(hub_server: HubServer, tmp_path: Path) -> None:
    result = _run(
        hub_server,
        tmp_path,
        """
        push(folder, "org/secret", private=True)
        print(json.dumps({
            "download": outcome(hf_hub_download, "org/secret", "notes.txt", token=False),
            "info": outcome(HfApi(token=False).model_info, "org/secret"),
            "text": read(hf_hub_download("org/secret", "notes.txt", token=os.environ["HF_TOKEN"])),
            "private": HfApi(token=os.environ["HF_TOKEN"]).model_info("org/secret").private,
        }))
        """,
        folder=_folder(tmp_path),
    )

    assert issubclass(_raised(result["download"]), RepositoryNotFoundError) and result["download"]["status"] == 401
    assert issubclass(_raised(result["info"]), RepositoryNotFoundError) and result["info"]["status"] == 401
    assert result["text"] == "plain text\n" and result["private"] is True


def test_token_never_lands_in_stored_files(hub_server: HubServer, tmp_path: Path) -> None:
    oid = _run(hub_server, tmp_path, "print(json.dumps(push(folder)))", folder=_folder(tmp_path))
    assert hub_server.head("org/repo") == oid

    token = hub_server.token.encode()
    assert all(token not in content for content in hub_server.files("org/repo").values())
    assert all(token not in path.read_bytes() for path in hub_server.root.rglob("*") if path.is_file())
    # ...while it did travel where it belongs, in the Authorization header of the writes.
    commit = hub_server.requests_to("/commit/")[-1]
    assert commit["headers"]["authorization"] == f"Bearer {hub_server.token}"
    assert token not in commit["body"]


def test_fixture_alone_keeps_the_suite_offline(hub_server: HubServer) -> None:
    # The client in this process refuses before sending anything: only `run_client` children reach the server.
    with pytest.raises(OfflineModeIsEnabled):
        HfApi(endpoint=hub_server.url, token=hub_server.token).create_repo("org/offline")
    assert hub_server.requests == []


def test_run_client_points_only_the_child_at_the_server(hub_server: HubServer, tmp_path: Path) -> None:
    def parent_state() -> tuple[Any, ...]:
        environ = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        return constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, constants.HF_HOME, environ

    before = parent_state()
    home = tmp_path / "child_home"
    # No _CLIENT and no HF_TOKEN: the child must find no token at all (not the user's), so writes pass one explicitly.
    script = f"""
        import json, os
        from huggingface_hub import HfApi, constants, get_token, hf_hub_download

        api = HfApi(token={hub_server.token!r})
        api.create_repo("org/repo")
        api.upload_file(path_or_fileobj=b"plain text\\n", path_in_repo="notes.txt", repo_id="org/repo")
        path = hf_hub_download("org/repo", "notes.txt")
        print(json.dumps(dict(
            environ=os.environ["HF_ENDPOINT"], endpoint=constants.ENDPOINT, offline=constants.is_offline_mode(),
            cache=constants.HF_HUB_CACHE, token=get_token(), cwd=os.getcwd(), path=path, text=open(path).read(),
        )))
    """
    child = json.loads(run_client(hub_server.url, home, script).splitlines()[-1])

    assert child["environ"] == child["endpoint"] == hub_server.url and child["offline"] is False
    assert child["cache"] == str(home / "hub") and child["token"] is None and child["cwd"] == str(home)
    assert Path(child["path"]).is_relative_to(home / "hub") and child["text"] == "plain text\n"
    assert (home / "hub" / "models--org--repo").is_dir()
    assert hub_server.files("org/repo")["notes.txt"] == b"plain text\n"
    # The parent is untouched: same constants, same environment, still offline.
    assert parent_state() == before and constants.is_offline_mode()
    assert hub_server.url != constants.ENDPOINT and os.environ["HF_HUB_OFFLINE"] == "1"


def test_run_client_reports_the_child_traceback_and_timeouts(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"  # never contacted: the scripts below import nothing from the Hub
    with pytest.raises(AssertionError, match=r"(?s)exited with 1.*ZeroDivisionError"):
        run_client(url, tmp_path / "home", "print('before'); 1 / 0")
    with pytest.raises(AssertionError, match="timed out after 1"):
        run_client(url, tmp_path / "home", "import time; time.sleep(30)", timeout=1)


def test_server_stops_cleanly_and_keeps_its_repos(tmp_path: Path) -> None:
    with HubServer(root=tmp_path / "srv") as server:
        oid = _run(server, tmp_path, "print(json.dumps(push(folder)))", folder=_folder(tmp_path))
        files = server.files("org/repo")
        assert server.head("org/repo") == oid and "notes.txt" in files
    assert not server._thread.is_alive()
    with HubServer(root=tmp_path / "srv") as again:
        assert again.files("org/repo") == files and again.head("org/repo") == oid


def test_tiny_checkpoint_with_tokenizer_round_trip(hub_server: HubServer, tmp_path: Path, tiny_lm) -> None:
    from transformers import AutoTokenizer

    local = tiny_lm("llama3")
    text = "a small test sentence"
    # Tokenizer loading lists the repo tree (additional_chat_templates/ answers EntryNotFound) and probes optional
    # files by HEAD: every miss must be a clean EntryNotFound, not a crash.
    result = _run(
        hub_server,
        tmp_path,
        """
        from transformers import AutoTokenizer

        push(folder, "org/tiny-llama3")
        print(json.dumps(AutoTokenizer.from_pretrained("org/tiny-llama3")(text)["input_ids"]))
        """,
        folder=local,
        text=text,
    )

    assert result == AutoTokenizer.from_pretrained(local)(text)["input_ids"]
    assert not hub_server.unhandled and not hub_server.errors
