"""Create a Label Studio project from our labeling config, import our task files, read back.

usage: ls_server_roundtrip.py --url URL --email E --password P [--token T] --config CONFIG.xml
                              --out OUT.npz [--local-storage DIR] TASKS.json [TASKS.json ...]
Logs in (the session fetches images, as the browser does) and creates a personal access token
(legacy tokens are off in 1.23; a user has one token, so later runs pass --token, printed by
the first), then through
label-studio-sdk: creates the project (and a local-files storage on DIR, so the server may
serve those images), imports each file, lists the tasks with their predictions, validates
each against the project's stored config, and fetches each task's image from the server.
Decoded brush masks go to OUT.npz under "<task data.image_uri>/<region id>"; one JSON line
summarises the rest.
"""

import argparse
import hashlib
import json

import numpy as np
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

parser = argparse.ArgumentParser()
for name in ("url", "email", "password", "config", "out"):
    parser.add_argument(f"--{name}", required=True)
parser.add_argument("--token")
parser.add_argument("--local-storage")
parser.add_argument("tasks", nargs="+")
args = parser.parse_args()
url = args.url
session = requests.Session()
session.get(f"{url}/user/login/").raise_for_status()
login = session.post(
    f"{url}/user/login/",
    headers={"Referer": f"{url}/user/login/"},
    data={"email": args.email, "password": args.password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
)
login.raise_for_status()
if args.token is None:
    created = session.post(f"{url}/api/token/", headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": url})
    created.raise_for_status()
    args.token = created.json()["token"]
client = LabelStudio(base_url=url, api_key=args.token)
project = client.projects.create(title="yolact_batch pre-labels", label_config=open(args.config).read())
if args.local_storage:
    client.import_storage.local.create(project=project.id, path=args.local_storage, title="images")
imported = []
for path in args.tasks:
    result = client.projects.import_tasks(project.id, request=json.load(open(path)), return_task_ids=True)
    imported.append({"tasks": result.task_count, "predictions": result.prediction_count})
stored = client.projects.get(project.id)
interface = LabelInterface(stored.label_config)
tasks, masks, errors = [], {}, []
for task in client.tasks.list(project=project.id, fields="all"):
    image = session.get(url + task.data["image"]) if task.data["image"].startswith("/data/") else None
    entry = {
        "data": task.data,
        "predictions": [],
        "image": {"status": image.status_code, "sha256": hashlib.sha256(image.content).hexdigest()} if image else None,
    }
    for prediction in task.predictions or []:
        as_dict = {"model_version": prediction.model_version, "score": prediction.score, "result": prediction.result}
        errors += [f"task {task.id}: {e}" for e in interface.validate_prediction(as_dict, return_errors=True)]
        regions = []
        for region in prediction.result:
            kind = region["type"]
            regions.append(
                {
                    "id": region["id"],
                    "type": kind,
                    "label": region["value"][kind],
                    "score": region.get("score"),
                    "points": region["value"].get("points"),
                }
            )
            if kind == "brushlabels":
                h, w = region["original_height"], region["original_width"]
                rgba = decode_rle(region["value"]["rle"]).reshape(h, w, 4)
                masks[f"{task.data['image_uri']}/{region['id']}"] = rgba[:, :, 3] == 255
        entry["predictions"].append(
            {"model_version": prediction.model_version, "score": prediction.score, "regions": regions}
        )
    tasks.append(entry)
np.savez_compressed(args.out, **masks)
print(
    json.dumps(
        {
            "token": args.token,
            "project": project.id,
            "imported": imported,
            "tasks": tasks,
            "errors": errors[:20],
            "labels": list(interface.get_control("label").labels),
            "task_number": client.projects.get(project.id).task_number,
        }
    )
)
