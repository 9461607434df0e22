"""The commit/resume protocol and the fail-fast checks, without Ray."""

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.job.conftest import job_env, jpeg_images
from yolact_batch.backends.factory import BackendOptions
from yolact_batch.cli.main import main
from yolact_batch.core.settings import InferenceRequest
from yolact_batch.io.commit import OutputStore, Superseded
from yolact_batch.io.schema import ROW_SCHEMA, ModelRef, error_row, rows_to_table
from yolact_batch.io.storage import StorageOptions
from yolact_batch.job.config import JobConfig, ModelSpec, Resources
from yolact_batch.job.plan import JobConflict, finish, prepare

REF = ModelRef("yolact_resnet50", "sha256:00")


def rows(*uris: str) -> pa.Table:
    return rows_to_table([error_row(image_uri=u, image_id=None, error="x", model=REF) for u in uris])


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, blob in jpeg_images(5).items():
        (folder / name).write_bytes(blob)
    return folder


def config(images, output, model, **kw) -> JobConfig:
    return JobConfig(input=str(images), output=str(output), model=str(model), **kw)


def test_commit_is_atomic_named_by_content_and_fenced(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.write_json("_job.json", {"run_id": "run-1"})
    first = store.commit(rows("b", "a", "c"), "run-1")
    again = store.commit(rows("c", "a", "b"), "run-1")  # a retried task: same rows, any order
    assert first == again and first["rows"] == 3 and first["errors"] == 3 and first["instances"] == 0
    files = sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir())
    assert files == [first["file"]]  # no temporary left, no second file
    table = pq.read_table(tmp_path / "out" / "predictions" / first["file"])
    assert table.schema.remove_metadata() == ROW_SCHEMA and table["image_uri"].to_pylist() == ["a", "b", "c"]
    assert store.commit(rows("d"), "run-1")["file"] != first["file"]
    store.write_json("_job.json", {"run_id": "run-2"})  # a newer run took over the output
    with pytest.raises(Superseded, match="superseded by run run-2"):
        store.commit(rows("e"), "run-1")
    committed = store.committed()
    assert sorted(committed["image_uri"].to_pylist()) == ["a", "b", "c", "d"]
    assert committed.schema.metadata[b"files"] == b"2"


def test_temporaries_of_a_killed_run_are_removed_and_ignored(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.write_json("_job.json", {"run_id": "r"})
    store.commit(rows("a"), "r")
    temp = tmp_path / "out" / "predictions" / ".part-0123.parquet.abcd.tmp"
    temp.write_bytes(b"half a parquet file")
    assert store.committed().num_rows == 1  # never read
    assert store.remove_temporaries() == 1 and not temp.exists()


def test_prepare_resumes_refuses_other_settings_and_overwrites(tmp_path, images, model_path):
    out = tmp_path / "out"
    plan = prepare(config(images, out, model_path, limit=3))
    assert (plan.listed, plan.skipped, plan.todo.num_rows) == (3, 0, 3)
    done = plan.todo["image_uri"].to_pylist()[:2]
    plan.output.commit(rows(*done), plan.run_id)
    resumed = prepare(config(images, out, model_path))  # a larger limit extends the same job
    assert (resumed.listed, resumed.skipped, resumed.todo.num_rows) == (5, 2, 3)
    assert not set(done) & set(resumed.todo["image_uri"].to_pylist())
    with pytest.raises(Superseded):  # the earlier run is fenced off
        plan.output.commit(rows("late"), plan.run_id)

    other = config(images, out, model_path, inference=InferenceRequest(score_threshold=0.3))
    with pytest.raises(JobConflict, match=r"another job \(settings.output.score_threshold 0.0 -> 0.3\).*--overwrite"):
        prepare(other)
    with pytest.raises(JobConflict, match=r"another job \(input .*images\" -> .*other\"\)"):
        prepare(config(shutil.copytree(images, tmp_path / "other"), out, model_path))
    fresh = prepare(JobConfig(**{**other.__dict__, "overwrite": True}))
    assert (fresh.skipped, fresh.todo.num_rows) == (0, 5) and fresh.output.committed().num_rows == 0


def test_finish_checks_exactly_once_and_writes_success(tmp_path, images, model_path):
    plan = prepare(config(images, tmp_path / "out", model_path))
    uris = plan.todo["image_uri"].to_pylist()
    plan.output.commit(rows(*uris[:3]), plan.run_id)
    with pytest.raises(RuntimeError, match="2 images were not committed; rerun the same command"):
        finish(plan, 3, 1.0)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    plan.output.commit(rows(*uris[2:]), plan.run_id)  # uris[2] twice
    with pytest.raises(RuntimeError, match="1 images are committed twice"):
        finish(plan, 5, 1.0)


def test_rows_a_stale_writer_committed_twice_are_repaired_before_the_next_run(tmp_path, images, model_path):
    plan = prepare(config(images, tmp_path / "out", model_path))
    a, b, c, d, e = plan.todo["image_uri"].to_pylist()
    plan.output.commit(rows(a, b), plan.run_id)
    plan.output.commit(rows(b, c), plan.run_id)  # b twice
    plan.output.commit(rows(a, c), plan.run_id)  # only duplicates: the file goes away
    logged = []
    again = prepare(config(images, tmp_path / "out", model_path), logged.append)
    assert "removed 3 rows committed twice by an interrupted run" in logged[-1]
    committed = again.output.committed()["image_uri"].to_pylist()
    assert sorted(committed) == [a, b, c] and again.todo["image_uri"].to_pylist() == [d, e]


def test_cli_fails_fast_with_one_message_and_no_ray(tmp_path, images, model_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a model")
    (tmp_path / "empty").mkdir()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "_job.json").write_text(json.dumps({"input": "elsewhere", "model": {"digest": "sha256:1"}}))
    cases = [
        (["--model", str(tmp_path / "nope.onnx")], "nope.onnx: no such file"),
        (["--model", str(tmp_path / "broken.onnx")], "broken.onnx: not a loadable ONNX model"),
        (["--input", str(tmp_path / "missing")], "missing: no such file or directory"),
        (["--input", str(tmp_path / "empty")], "empty: the directory is empty"),
        (["--output", str(busy)], "holds predictions of another job"),
        (["--classes", "persn"], "unknown class name 'persn'"),
        (["--providers", "tpu"], "unknown execution provider"),
        (["--actors", "3-2"], "actors must be N or MIN-MAX"),
    ]
    script = f"""
import sys
from yolact_batch.cli.main import main
from yolact_batch.io.commit import OutputStore, Superseded
base = ["segment", "--input", {str(images)!r}, "--model", {str(model_path)!r}, "--output", {str(tmp_path / "o")!r}]
for extra in {[c[0] for c in cases]!r}:
    args = list(base)
    for i in range(0, len(extra), 2):
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i:i + 2]
    print("rc", main(args), file=sys.stderr)
assert not any(m.split(".")[0] == "ray" for m in sys.modules), "Ray was imported"
print("no ray", file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=job_env())
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.stderr.count("rc 2") == len(cases) == len(errors) and "no ray" in result.stderr
    for (_, message), line in zip(cases, errors):
        assert message in line, (message, line)


def test_resources_are_validated():
    with pytest.raises(ValueError, match="unknown backend 'trt'"):
        Resources(backend=BackendOptions(backend="trt"))
    with pytest.raises(ValueError, match="commit-size must be >= 1"):
        Resources(commit_size=0)
    with pytest.raises(ValueError, match="needs a CPU or GPU share"):
        Resources(cpus_per_actor=0)


def test_model_actors_refuse_a_changed_model(model_path):
    digest = "sha256:" + hashlib.sha256(model_path.read_bytes()).hexdigest()
    spec = ModelSpec(str(model_path), digest, StorageOptions(), None, BackendOptions(intra_op_threads=1), 550)
    assert spec.load().metadata.contract == "raw"
    changed = ModelSpec(str(model_path), "sha256:0", StorageOptions(), None, BackendOptions(intra_op_threads=1), 550)
    with pytest.raises(ValueError, match="the model changed since the job started"):
        changed.load()


def test_the_tensorrt_backend_without_tensorrt_fails_in_the_actor_with_the_fix(model_path):
    pytest.importorskip("onnx")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the GPU tests cover the backend")
    digest = "sha256:" + hashlib.sha256(model_path.read_bytes()).hexdigest()
    spec = ModelSpec(
        str(model_path), digest, StorageOptions(), None, BackendOptions("tensorrt", ("cuda",), batch_size=4), 550
    )
    with pytest.raises(ImportError, match="tensorrt"):
        spec.load()


def test_help_names_every_option_and_no_secret(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--batch-size",
        "--actors",
        "--gpus-per-actor",
        "--backend",
        "--providers",
        "--score-threshold",
        "--top-k",
        "--max-detections",
        "--classes",
        "--cross-class-nms",
        "--mask-threshold",
        "--limit",
        "--endpoint-url",
        "--anonymous",
        "--profile",
        "--region",
        "--address",
        "--overwrite",
    ):
        assert option in text
    assert "secret" not in text.lower() and "credentials come from the AWS/GCP environment" in text
