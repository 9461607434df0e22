"""A strict check of the KubeRay ``ray.io/v1`` fields our manifests use.

Not the vendored CRD: a hand-written subset of its OpenAPI schema (field names and types as
in KubeRay's ``ray.io_rayjobs.yaml`` / ``ray.io_rayclusters.yaml``, v1), closed at every level,
so a misspelt or misplaced field fails the test instead of being silently dropped by the API
server's pruning.
"""

from __future__ import annotations

STR, INT, BOOL, NUM = "string", "integer", "boolean", "number"


def obj(**props) -> dict:
    return {"type": "object", "properties": props, "additionalProperties": False}


def str_map() -> dict:
    return {"type": "object", "additionalProperties": {"type": STR}}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


QUANTITY = {"anyOf": [{"type": STR}, {"type": INT}]}
ENV_VAR = obj(
    name={"type": STR},
    value={"type": STR},
    valueFrom=obj(secretKeyRef=obj(name={"type": STR}, key={"type": STR}, optional={"type": BOOL})),
)
CONTAINER = obj(
    name={"type": STR},
    image={"type": STR},
    command=array({"type": STR}),
    args=array({"type": STR}),
    env=array(ENV_VAR),
    ports=array(obj(containerPort={"type": INT}, name={"type": STR}, protocol={"type": STR})),
    resources=obj(
        limits={"type": "object", "additionalProperties": QUANTITY},
        requests={"type": "object", "additionalProperties": QUANTITY},
    ),
)
for c in (CONTAINER,):
    c["required"] = ["name"]
POD_TEMPLATE = obj(
    metadata=obj(labels=str_map(), annotations=str_map()),
    spec=obj(
        containers=array(CONTAINER),
        restartPolicy={"type": STR, "enum": ["Always", "OnFailure", "Never"]},
        tolerations=array(obj(key={"type": STR}, operator={"type": STR}, value={"type": STR}, effect={"type": STR})),
        nodeSelector=str_map(),
        serviceAccountName={"type": STR},
    ),
)
HEAD_GROUP = obj(
    rayStartParams=str_map(), serviceType={"type": STR}, enableIngress={"type": BOOL}, template=POD_TEMPLATE
)
WORKER_GROUP = obj(
    groupName={"type": STR},
    replicas={"type": INT, "minimum": 0},
    minReplicas={"type": INT, "minimum": 0},
    maxReplicas={"type": INT, "minimum": 0},
    numOfHosts={"type": INT},
    idleTimeoutSeconds={"type": INT},
    rayStartParams=str_map(),
    suspend={"type": BOOL},
    template=POD_TEMPLATE,
)
WORKER_GROUP["required"] = ["groupName", "rayStartParams", "template"]
HEAD_GROUP["required"] = ["rayStartParams", "template"]
CLUSTER_SPEC = obj(
    rayVersion={"type": STR},
    enableInTreeAutoscaling={"type": BOOL},
    headGroupSpec=HEAD_GROUP,
    workerGroupSpecs=array(WORKER_GROUP),
    suspend={"type": BOOL},
)
CLUSTER_SPEC["required"] = ["headGroupSpec"]
METADATA = obj(name={"type": STR}, namespace={"type": STR}, labels=str_map(), annotations=str_map())

RAYJOB = obj(
    apiVersion={"const": "ray.io/v1"},
    kind={"const": "RayJob"},
    metadata=METADATA,
    spec=obj(
        entrypoint={"type": STR},
        runtimeEnvYAML={"type": STR},
        shutdownAfterJobFinishes={"type": BOOL},
        ttlSecondsAfterFinished={"type": INT},
        activeDeadlineSeconds={"type": INT},
        backoffLimit={"type": INT},
        submissionMode={"type": STR, "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        submitterPodTemplate=POD_TEMPLATE,
        entrypointNumCpus={"type": NUM},
        entrypointNumGpus={"type": NUM},
        rayClusterSpec=CLUSTER_SPEC,
        suspend={"type": BOOL},
    ),
)
RAYJOB["required"] = ["apiVersion", "kind", "metadata", "spec"]
RAYCLUSTER = obj(apiVersion={"const": "ray.io/v1"}, kind={"const": "RayCluster"}, metadata=METADATA, spec=CLUSTER_SPEC)
RAYCLUSTER["required"] = ["apiVersion", "kind", "metadata", "spec"]
