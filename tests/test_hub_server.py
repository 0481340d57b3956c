"""The loopback Hub in `tests/hub_server.py` works with the real, unmocked `huggingface_hub` client.

Every other push/pull test leans on this server, so these tests pin down that what the client uploads is exactly
what the server stores, that what it downloads is exactly what was stored, and that the redirection helpers send
code which takes no endpoint (transformers, child processes) to it too.
"""

import os
import random
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from tests.hub_server import HubServer, go_online, point_client_at

TOKEN = "hf_secret_test_token"
REPO = "tester/round-trip"


@pytest.fixture
def hub(monkeypatch):
    go_online(monkeypatch)
    with HubServer() as server:
        yield server


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token=TOKEN)


@pytest.fixture
def folder(tmp_path):
    """A small model-like folder: text, a binary of a few hundred KB, a nested file. Returns (path, contents)."""
    contents = {
        "config.json": b'{"hidden_size": 8}\n',
        "weights.bin": random.Random(0).randbytes(300_000),
        "nested/deeper/notes.txt": "unicode: caf\u00e9 \u2713\n".encode(),
    }
    root = tmp_path / "folder"
    for rel, data in contents.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root, contents


@pytest.fixture
def pushed(hub, api, folder):
    """`folder` pushed to `REPO` in one commit; returns its contents."""
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=folder[0], commit_message="Add model files")
    return folder[1]


def read_tree(root) -> dict[str, bytes]:
    """Every file under `root` except the client's own bookkeeping in `.cache/`."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".cache" not in path.relative_to(root).parts
    }


def test_upload_folder_stores_exact_bytes_in_one_commit(hub, pushed):
    assert hub.files(REPO) == pushed
    commits = hub.commits(REPO)
    assert [c["message"] for c in commits] == ["initial commit", "Add model files"]
    assert sorted(commits[-1]["added"]) == sorted(pushed)
    assert hub.unexpected == []


def test_snapshot_and_single_file_download_match_upload(hub, pushed, tmp_path):
    local = snapshot_download(
        REPO, local_dir=tmp_path / "snap", cache_dir=tmp_path / "c", endpoint=hub.url, token=TOKEN
    )
    assert read_tree(tmp_path / "snap") == pushed
    assert local == str((tmp_path / "snap").resolve())

    path = hf_hub_download(REPO, "nested/deeper/notes.txt", cache_dir=tmp_path / "c2", endpoint=hub.url)
    assert open(path, "rb").read() == pushed["nested/deeper/notes.txt"]
    assert hub.unexpected == []


def test_token_rides_in_authorization_header_and_nowhere_else(hub, pushed):
    (commit,) = hub.requests_to("/commit/main", method="POST")
    assert commit.header("authorization") == f"Bearer {TOKEN}"
    assert all(TOKEN.encode() not in data for data in hub.files(REPO).values())


def test_second_commit_is_what_download_sees_and_old_revision_stays(hub, api, pushed, tmp_path):
    first = hub.commits(REPO)[-1]["oid"]
    api.upload_file(path_or_fileobj=b'{"hidden_size": 16}\n', path_in_repo="config.json", repo_id=REPO)

    commits = hub.commits(REPO)
    assert len(commits) == 3 and commits[-1]["added"] == ["config.json"]
    snapshot_download(REPO, local_dir=tmp_path / "new", cache_dir=tmp_path / "c", endpoint=hub.url)
    assert read_tree(tmp_path / "new") == {**pushed, "config.json": b'{"hidden_size": 16}\n'}
    old = hf_hub_download(REPO, "config.json", revision=first, cache_dir=tmp_path / "c", endpoint=hub.url)
    assert open(old, "rb").read() == pushed["config.json"]


def test_reupload_of_unchanged_folder_makes_no_commit(hub, api, folder, pushed):
    """The preupload answer carries each stored file's git oid, which the client uses to drop unchanged files."""
    api.upload_folder(repo_id=REPO, folder_path=folder[0], commit_message="Again")
    assert [c["message"] for c in hub.commits(REPO)] == ["initial commit", "Add model files"]


def test_delete_file_commit(hub, api, pushed):
    api.delete_file("weights.bin", repo_id=REPO)
    assert set(hub.files(REPO)) == set(pushed) - {"weights.bin"}
    assert hub.commits(REPO)[-1]["deleted"] == ["weights.bin"]


def test_explicit_endpoint_sends_nothing_to_the_default_one(hub, api, folder, monkeypatch, tmp_path):
    """`go_online` must keep the client's side requests (agent-harness registry) off `constants.ENDPOINT`.

    A second server stands in for huggingface.co; the registry cache is emptied so the once-per-process fetch
    would happen in this test whatever ran before it.
    """
    import huggingface_hub.utils._detect_agent as detect_agent

    monkeypatch.setattr(detect_agent, "_registry", None)
    with HubServer() as decoy:
        point_client_at(monkeypatch, decoy.url)  # moves ENDPOINT and the resolve template together, as they must be
        api.create_repo(REPO)
        api.upload_folder(repo_id=REPO, folder_path=folder[0])
        snapshot_download(REPO, cache_dir=tmp_path / "c", endpoint=hub.url)
        assert decoy.requests == []


def test_bare_name_lands_under_whoami_user(hub, api):
    assert api.whoami()["name"] == hub.user == "tester"
    assert api.create_repo("bare").repo_id == "tester/bare"
    api.create_repo("tester/bare", exist_ok=True)  # the 409 for an existing repo is what exist_ok swallows
    assert hub.repo_ids == ["tester/bare"]


def test_missing_file_and_unknown_route(hub, api, pushed, tmp_path):
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "absent.txt", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(HfHubHTTPError):
        api.list_repo_commits(REPO)  # not implemented: must show up as unexpected, not pass silently
    assert [r.path for r in hub.unexpected] == [f"/api/models/{REPO}/commits/main"]


def test_point_client_at_redirects_in_process_and_child_processes(hub, pushed, monkeypatch, tmp_path):
    point_client_at(monkeypatch, hub.url, cache_dir=tmp_path / "cache")
    assert constants.ENDPOINT == hub.url

    path = hf_hub_download(REPO, "config.json")  # no endpoint, no cache_dir: both come from the helper
    assert path.startswith(str(tmp_path / "cache")) and open(path, "rb").read() == pushed["config.json"]

    code = f"from huggingface_hub import hf_hub_download; print(open(hf_hub_download({REPO!r}, 'config.json')).read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.strip() == pushed["config.json"].decode().strip()


def test_transformers_push_to_hub_then_from_pretrained(hub, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    point_client_at(monkeypatch, hub.url, cache_dir=tmp_path / "cache")
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.push_to_hub("tiny-llama", token=TOKEN)  # bare name: the server files it under its user

    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files("tester/tiny-llama"))
    reloaded = AutoModelForCausalLM.from_pretrained("tester/tiny-llama")
    expected, actual = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert hub.unexpected == []
