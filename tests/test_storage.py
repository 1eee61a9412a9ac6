"""semmem.storage: the same calls give the same answers on local disk and on S3 (moto's server on 127.0.0.1), and the
readers built on it (jsonl shards, the megatron pair) read S3 objects exactly as local files. No Spark here: the
whole-pipeline runs on S3 are tests/test_s3.py's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semmem import storage
from semmem.errors import ConfigError, InputError
from semmem.ingest import megatron, pile
from tests.corpus import small_corpus, write_megatron
from tests.s3server import moto_server
from tests.standalone import free_port

BUCKET = "storage-test"


@pytest.fixture(scope="module")
def s3_root(tmp_path_factory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "server.log", BUCKET):
        yield f"s3://{BUCKET}"


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A fresh folder: on local disk, or a fresh prefix of the S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return f"{request.getfixturevalue('s3_root')}/{tmp_path.name}"


def test_locations_are_normalized():
    assert storage.normalize("s3a://b/x/y/") == storage.normalize("s3n://b/x/y") == "s3://b/x/y"
    assert storage.join("s3://b/x", "y", "z.json") == "s3://b/x/y/z.json"
    assert storage.normalize("rel/dir") == str(Path("rel/dir").absolute())
    assert storage.normalize("file:///tmp/a") == "/tmp/a"
    assert storage.is_remote("s3a://b/k") and not storage.is_remote("/tmp/x")
    with pytest.raises(ConfigError, match="gs:// locations are not supported"):
        storage.normalize("gs://bucket/x")
    with pytest.raises(ConfigError, match="needs a bucket"):
        storage.normalize("s3:///x")


def test_files_and_folders_behave_alike(root):
    assert not storage.exists(storage.join(root, "a.txt")) and not storage.is_dir(root)
    storage.write_text(storage.join(root, "a.txt"), "hello")
    storage.write_bytes(storage.join(root, "sub", "deep", "b.bin"), bytes(range(256)))
    storage.write_text(storage.join(root, "sub", "_SUCCESS"), "")
    assert storage.read_text(storage.join(root, "a.txt")) == "hello"
    assert storage.is_file(storage.join(root, "a.txt")) and not storage.is_dir(storage.join(root, "a.txt"))
    assert storage.is_dir(storage.join(root, "sub")) and storage.size(storage.join(root, "sub", "deep", "b.bin")) == 256
    assert storage.list_dir(root) == ["a.txt", "sub"]
    assert [f for f, _ in storage.find_files(root)] == [storage.join(root, "a.txt"),
                                                        storage.join(root, "sub", "deep", "b.bin")]
    assert [f for f, _ in storage.find_files(root, (".bin",))] == [storage.join(root, "sub", "deep", "b.bin")]
    assert storage.glob(storage.join(root, "sub", "*", "*.bin")) == [storage.join(root, "sub", "deep", "b.bin")]
    with storage.open_input_file(storage.join(root, "sub", "deep", "b.bin")) as f:
        assert f.read_at(4, 100) == bytes([100, 101, 102, 103])
    storage.delete_dir(storage.join(root, "sub"))
    assert storage.list_dir(root) == ["a.txt"]
    storage.delete_dir(storage.join(root, "nothing-here"))  # no error


def test_replacing_folder_publishes_whole_or_not_at_all(root):
    folder = storage.join(root, "model")
    with storage.replacing_folder(folder, marker="info.json") as tmp:
        (tmp / "weights.bin").write_bytes(b"v1")
        (tmp / "info.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with storage.replacing_folder(folder, marker="info.json") as tmp:
            (tmp / "weights.bin").write_bytes(b"v2")
            raise RuntimeError("training failed")
    assert storage.read_text(storage.join(folder, "weights.bin")) == "v1"  # the old folder, untouched
    with storage.replacing_folder(folder, marker="info.json") as tmp:
        (tmp / "other.bin").write_bytes(b"v3")
        (tmp / "info.json").write_text("{}")
    assert storage.list_dir(folder) == ["info.json", "other.bin"]  # replaced as a whole: no file of v1 left
    local = storage.local_folder(folder)
    assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == ["info.json", "other.bin"]
    assert (local / "other.bin").read_bytes() == b"v3"


def test_remote_folders_are_copied_once_per_change(s3_root, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    folder = f"{s3_root}/cached-model"
    storage.write_text(f"{folder}/config.json", "{}")
    first = storage.local_folder(folder)
    assert storage.local_folder(folder) == first  # unchanged objects: the same copy
    storage.write_text(f"{folder}/config.json", '{"changed": 1}')
    second = storage.local_folder(folder)
    assert second != first and (second / "config.json").read_text() == '{"changed": 1}'
    with pytest.raises(InputError, match="no files there"):
        storage.local_folder(f"{s3_root}/no-such-model")


def test_jsonl_shards_read_from_s3_equal_local(s3_root, tmp_path):
    shards = small_corpus(tmp_path / "corpus", n_docs=30)
    for p in shards:
        storage.write_bytes(f"{s3_root}/corpus/{p.name}", p.read_bytes())
    remote = pile.find_shards([f"{s3_root}/corpus"])
    assert remote == pile.find_shards([f"{s3_root}/corpus/*.jsonl*"])
    assert [r.rsplit("/", 1)[1] for r in remote] == [p.name for p in sorted(shards)]
    for r, p in zip(remote, sorted(shards)):
        assert list(pile.iter_lines(r)) == list(pile.iter_lines(str(p)))
    with pytest.raises(InputError, match="does not exist"):
        pile.find_shards([f"{s3_root}/corpus/missing.jsonl"])
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        pile.find_shards(["s3://no-such-bucket/corpus"])


def test_megatron_pair_on_s3_validates_and_reads_like_local(s3_root, tmp_path):
    rows = np.random.default_rng(3).integers(0, 60000, size=(50, 80))
    write_megatron(tmp_path / "document", rows)
    for ext in (".bin", ".idx"):
        storage.write_bytes(f"{s3_root}/mega/document{ext}", (tmp_path / f"document{ext}").read_bytes())
    local = megatron.open_index(str(tmp_path / "document"), 80)
    remote = megatron.open_index(f"{s3_root}/mega/document.bin", 80)
    assert (remote.num_rows, remote.first_pointer, remote.dtype) == (local.num_rows, local.first_pointer, local.dtype)
    assert megatron.index_record(remote)["bin_bytes"] == megatron.index_record(local)["bin_bytes"]
    got = megatron.read_items(remote.bin_path, np.uint16, 7 * 80 * 2, 3 * 80)
    assert np.array_equal(got, rows[7:10].ravel())
    with pytest.raises(InputError, match="expected stream.seq_length=64"):
        megatron.open_index(f"{s3_root}/mega/document", 64)
    storage.write_bytes(f"{s3_root}/mega/short.idx", (tmp_path / "document.idx").read_bytes())
    storage.write_bytes(f"{s3_root}/mega/short.bin", (tmp_path / "document.bin").read_bytes()[:-2])
    with pytest.raises(InputError, match="truncated or mismatched pair"):
        megatron.open_index(f"{s3_root}/mega/short", 80)


def test_unreachable_store_is_a_clear_error(s3_root):
    with pytest.raises(ConfigError, match="bucket 'nope' does not exist"):
        storage.check_access("s3://nope/wh", "warehouse")
    endpoint = os.environ[storage.ENDPOINT_ENV]
    try:
        storage.configure(endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
        with pytest.raises(ConfigError, match=r"cannot reach bucket 'storage-test' at http://127.0.0.1:\d+"):
            storage.check_access(f"{s3_root}/wh", "warehouse")
    finally:
        storage.configure(endpoint_url=endpoint)


def test_s3_without_the_hadoop_aws_jar_is_a_clear_error(tmp_path):
    from semmem.spark import hadoop_version, s3_jars

    with pytest.raises(ConfigError, match=f"holds no hadoop-aws jar: run `make jars`.*hadoop-aws-{hadoop_version()}"):
        s3_jars(str(tmp_path))
    (tmp_path / f"hadoop-aws-{hadoop_version()}.jar").write_bytes(b"")
    (tmp_path / "bundle-2.0.jar").write_bytes(b"")
    assert [Path(j).name for j in s3_jars(str(tmp_path))] == ["bundle-2.0.jar", f"hadoop-aws-{hadoop_version()}.jar"]
