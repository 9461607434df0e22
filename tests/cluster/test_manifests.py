"""The cluster files users copy: YAML parses, KubeRay fields are the CRD's, `ray up` passes Ray's schema."""

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.cluster.kuberay_schema import RAYCLUSTER, RAYJOB

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name,schema", [("kuberay/rayjob.yaml", RAYJOB), ("kuberay/raycluster.yaml", RAYCLUSTER)])
def test_kuberay_manifests_use_only_crd_fields(name, schema):
    jsonschema.validate(load(name), schema)


def cluster_spec(name: str) -> dict:
    doc = load(name)
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", ["kuberay/rayjob.yaml", "kuberay/raycluster.yaml"])
def test_kuberay_groups_are_sized_and_gpus_requested(name):
    spec = cluster_spec(name)
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no work on the head
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1"
    for group in [spec["headGroupSpec"], *groups.values()]:
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[key], "credentials come from the secret, never inline"
            assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key


def test_rayjob_finishes_cleanly():
    spec = load("kuberay/rayjob.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["entrypoint"].startswith("python jobs/segment.py")
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]


def test_schema_rejects_a_misspelt_field():
    doc = load("kuberay/rayjob.yaml")
    doc["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        jsonschema.validate(doc, RAYJOB)


def test_ray_up_config_validates_against_rays_own_schema():
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("aws/cluster.yaml")
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert {"head", "gpu_worker", "cpu_worker"} <= set(types) and types["head"]["resources"] == {"CPU": 0}
    config["setup_command"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_rayjob_entrypoint_parses_with_the_segment_command():
    import shlex

    from yolact_batch.cli.main import build_parser

    argv = shlex.split(load("kuberay/rayjob.yaml")["spec"]["entrypoint"])
    assert argv[:2] == ["python", "jobs/segment.py"]
    args = build_parser().parse_args(["segment", *argv[2:]])
    assert args.gpus_per_actor == 1 and args.actors == (1, 8) and args.providers == ("cuda",)
