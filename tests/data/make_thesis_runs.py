"""Rebuild ``thesis_runs.json.gz`` (the thesis's 56 logged runs, as this project's run configs
and per-epoch rows) from the original repository's ``all_experiments.txt``:

    python tests/data/make_thesis_runs.py ../shared/reference/thesis_experiments.txt

The tests read only the compact file this writes, never the source text.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("thesis_runs.json.gz")
COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr")
_BLOCK = re.compile(
    r"EXPERIMENT: (?P<id>\S+)\s+=+\s+NAME: (?P<name>\S+)\s+PARAMETERS:\s+(?P<params>\{.*?\})\s+"
    r"METRICS:\s+(?P<metrics>.*?)(?=\nEXPERIMENT: |\Z)",
    re.S,
)


def _value(text):
    """The original logged every parameter as text ('None', 'False', "{'lr': 0.001}")."""
    if not isinstance(text, str):
        return int(text) if float(text).is_integer() and abs(text) >= 1 else text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def config_of(params: dict, experiment: str) -> dict:
    """The thesis's logged parameters under this project's config keys."""
    p = {k: _value(v) for k, v in params.items()}
    config = {
        "description": experiment,
        "tags": [],
        "stanford_data_path": "input/stanford",
        "architecture": "ghost" if p["architecture"] == "GhostNet" else p["architecture"],
        "image_size": p["img_size"],
        "convert_to_grayscale": p["grayscale"],
        "normalize": p["normalize"],
        "crop_to_bboxes": p["crop_to_bboxes"],
        "erase_background": p["erase_background"],
        "augment_images": p["augment_images"],
        "image_augmentations": p["image_augmentations"],
        "augment_tensors": p["augment_tensors"],
        "tensor_augmentations": p["tensor_augmentations"],
        "batch_size": p["batch_size"],
        "num_epochs": p["max_num_epochs"],
        "dropout": p["dropout"],
        "out_channels": p["out_channels"],
        "loss_function": p["loss_function"],
        "loss_params": p["loss_params"],
        "optimizer": p["optimizer"],
        "optimizer_params": p["all_optimizer_params"],  # as logged: C-1..C-12 have no weight_decay
        "lr_scheduler": p["lr_scheduler"],
        "lr_scheduler_params": p["lr_scheduler_params"],
    }
    if p["norm_params_rgb"] is not None:
        config["normalization_params_rgb"] = p["norm_params_rgb"]
    if p["norm_params_gray"] is not None:
        config["normalization_params_grayscale"] = p["norm_params_gray"]
    return config


def parse(text: str) -> list[dict]:
    runs = []
    for block in _BLOCK.finditer(text):
        lines = block["metrics"].strip().splitlines()
        header = lines[0].split()
        rows = []
        for line in lines[1:]:
            values = dict(zip(header, (float(x) for x in line.split()[1:]), strict=True))
            rows.append([int(values["epoch"]), *(values[c] for c in COLUMNS[1:])])
        runs.append(
            {
                "id": block["id"],
                "name": block["name"],
                "config": config_of(ast.literal_eval(block["params"]), block["id"]),
                "rows": rows,
            }
        )
    return runs


def main(source: str) -> None:
    runs = parse(Path(source).read_text(encoding="utf-8"))
    data = {"columns": list(COLUMNS), "runs": runs}
    OUT.write_bytes(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))
    print(f"{len(runs)} runs, {sum(len(r['rows']) for r in runs)} epochs -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
