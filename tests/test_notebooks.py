"""The notebooks run end to end with nbclient on tiny data: train_colab.ipynb locally and as on
Colab (a stand-in google.colab, a temporary folder as Drive, a pip that only records), and
notebooks/normalization_coeffs.ipynb."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from datasets.labels import SPLITS, labels_csv
from datasets.normalization import compute_normalization_params

if TYPE_CHECKING:
    import nbformat

REPO = Path(__file__).resolve().parent.parent
KERNEL = "cars-test-venv"
# What the project folder on Drive needs to train; the rest of the checkout stays behind.
_NOT_COPIED = shutil.ignore_patterns(
    ".venv", ".git", "tests", "benchmarks", "notebooks", "output", "logs", "input", "demo",
    "config.yml", "__pycache__", ".*cache", "lightning_logs", "mlruns", ".neptune",
)  # fmt: skip


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec that starts this interpreter (the project's venv), found only by this test."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cars test venv",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # One torch thread in the kernel's train.py, as in the rest of the suite (conftest.py): on a
    # busy 2-core machine two spinning threads make a tiny run several times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return KERNEL


def run_notebook(
    path: Path, cwd: Path, kernel: str, train: bool = True, **parameters
) -> nbformat.NotebookNode:
    """Execute ``path`` in ``cwd``, the values in ``parameters`` set right after the cell tagged
    ``parameters`` (as papermill does); without ``train``, up to the training cell. Returns the
    executed notebook."""
    # Imported here: nbformat's jsonschema takes ~8 s to import (its rfc3987 grammar), paid by
    # every pytest process that collects this module, while only the slow notebook runs use it.
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    if not train:
        notebook.cells = [c for c in notebook.cells if "train.py" not in c.source]
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the settings cell is tagged 'parameters'"
    assignments = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(assignments))
    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=300,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def project_copy(folder: Path, config: dict) -> Path:
    """The project as a user keeps it: the code, and a config.yml for a 1-epoch tiny run."""
    shutil.copytree(REPO, folder, ignore=_NOT_COPIED)
    base = yaml.safe_load((REPO / "config_template.yml").read_text(encoding="utf-8"))
    tiny = {
        "image_size": [32, 32],
        "num_epochs": 1,
        "batch_size": 4,
        "num_workers": 0,
        "accelerator": "cpu",
        "augment_images": False,
    }
    tiny |= {key: False for key in base if key.startswith("log_to_")}  # trackers: not tested here
    (folder / "config.yml").write_text(yaml.safe_dump(base | tiny | config), encoding="utf-8")
    return folder


def finished_run(project: Path) -> tuple[Path, dict]:
    (run,) = (project / "output").glob("ghost_*")
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run, json.loads((run / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_colab_notebook_runs_locally(tmp_path, kernel, prepared_data):
    data = shutil.copytree(prepared_data, tmp_path / "stanford")  # FAST_INPUT caches beside it
    project = project_copy(tmp_path / "cars", {"stanford_data_path": str(data)})
    notebook = run_notebook(
        REPO / "train_colab.ipynb",
        tmp_path,
        kernel,
        local_project_wdir=str(project),
        FAST_INPUT=True,  # the recommended path; the default (the thesis's) runs as on Colab
    )
    text = printed(notebook)
    assert "Colab: False" in text and "not on Colab: using this environment" in text
    run, summary = finished_run(project)
    assert summary["runtime"] == "local" and summary["epochs_run"] == 1
    assert f"Run folder: {Path('output') / run.name}" in text  # train.py's output, streamed
    assert "nothing to resume" in text
    config = yaml.safe_load((run / "config.yml").read_text())  # FAST_INPUT
    assert config["cache_images"] is True and config["augment_on"] == "device"
    assert list((data / ".cache").glob("train-*.json"))

    # After a "disconnect": RESUME = 'last' continues the same run instead of starting one.
    notebook = run_notebook(
        REPO / "train_colab.ipynb",
        tmp_path,
        kernel,
        local_project_wdir=str(project),
        RESUME="last",
        overrides=["--set", "num_epochs=2"],
    )
    text = printed(notebook)
    assert "no new run; the next cell continues that one" in text
    assert "--resume last" in text
    resumed, summary = finished_run(project)  # still the only run folder
    assert resumed == run and summary["epochs_run"] == 2


def _fake_colab(folder: Path, pip_log: Path) -> Path:
    """A folder for PYTHONPATH: ``google.colab`` whose drive.mount does nothing, and a ``pip``
    that records each call (and the constraints file it is given) instead of installing."""
    colab = folder / "google" / "colab"  # no google/__init__.py: google stays a namespace
    colab.mkdir(parents=True)
    (colab / "__init__.py").write_text("")
    (colab / "drive.py").write_text(
        "def mount(mountpoint, **kwargs):\n    print('mounted', mountpoint)\n"
    )
    pip = folder / "pip"
    pip.mkdir()
    (pip / "__init__.py").write_text("")
    (pip / "__main__.py").write_text(
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "constraints = open(args[args.index('-c') + 1]).read() if '-c' in args else ''\n"
        f"with open({str(pip_log)!r}, 'a') as log:\n"
        "    log.write(json.dumps({'args': args, 'constraints': constraints}) + '\\n')\n"
    )
    return folder


def _thesis_archive(prepared: Path, archive: Path, top_level: bool) -> None:
    """``tar czf stanford.tar.gz stanford/`` (or of the four entries alone) as the thesis says."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in (*SPLITS, *(labels_csv(prepared, split).name for split in SPLITS)):
            tar.add(prepared / name, arcname=f"stanford/{name}" if top_level else name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("top_level", "train"), [(True, True), (False, False)], ids=["stanford-folder", "four-entries"]
)
def test_colab_notebook_as_on_colab(tmp_path, kernel, prepared_data, monkeypatch, top_level, train):
    drive = tmp_path / "drive"
    # The data path in config.yml is the user's computer's, absent on Colab: -d must replace it.
    project = project_copy(
        drive / "MyDrive" / "cars", {"stanford_data_path": "C:/Users/me/cars/input/stanford"}
    )
    _thesis_archive(prepared_data, project / "input" / "stanford.tar.gz", top_level)
    with (project / "prod_requirements.txt").open("a", encoding="utf-8") as file:
        file.write("colab-lacks-this==1.0\n")  # stands for lightning & co., absent on Colab
    pip_log = tmp_path / "pip.jsonl"
    fake = _fake_colab(tmp_path / "fake_colab", pip_log)
    monkeypatch.setenv("PYTHONPATH", f"{fake}:{REPO}")
    content = tmp_path / "content"

    notebook = run_notebook(
        REPO / "train_colab.ipynb",
        tmp_path,
        kernel,
        train=train,
        colab_google_drive_mount_point=str(drive),
        colab_remote_project_wdir=str(project),
        colab_data_dir=str(content / "data"),
    )
    text = printed(notebook)
    assert f"mounted {drive}" in text and "Colab: True" in text

    calls = [json.loads(line) for line in pip_log.read_text().splitlines()]
    assert len(calls) == 1
    args = calls[0]["args"]
    assert args[:1] == ["install"]
    constraints_file = args[args.index("-c") + 1]
    requested = [a for a in args[1:] if not a.startswith("-") and a != constraints_file]
    assert requested == ["colab-lacks-this==1.0"]  # what this environment lacks, nothing else
    assert not any(a.lower().startswith(("torch==", "torchvision==")) for a in args)
    assert "torch==" in calls[0]["constraints"]  # pinned in place, never replaced

    data_dir = content / "data" / "stanford" if top_level else content / "data"
    assert (data_dir / "train_labels.csv").is_file()
    assert f"data: {data_dir}" in text
    if not train:  # the unpacking is what differs; one training run as on Colab is enough
        return
    run, summary = finished_run(project)  # the run folder is on "Drive"
    assert summary["runtime"] == "colab" and summary["epochs_run"] == 1
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["stanford_data_path"] == str(data_dir)
    # FAST_INPUT's default: the thesis's path, as train.py's
    assert config["cache_images"] is False and config["augment_on"] == "cpu"


@pytest.mark.slow
def test_normalization_notebook(tmp_path, kernel, prepared_data):
    config = tmp_path / "config.yml"
    config.write_text(f"stanford_data_path: '{prepared_data}'\nimage_size: [16, 16]\n")
    notebook = run_notebook(  # started from notebooks/, as a user opens it
        REPO / "notebooks" / "normalization_coeffs.ipynb",
        REPO / "notebooks",
        kernel,
        CONFIG_FILE=str(config),
    )
    text = printed(notebook)
    assert "method per_image" in text
    pasted = yaml.safe_load(text[text.index("normalization_params_rgb:") :])
    for key, grayscale in (("rgb", False), ("grayscale", True)):
        expected = compute_normalization_params(
            prepared_data, image_size=[16, 16], grayscale=grayscale
        )
        assert pasted[f"normalization_params_{key}"] == expected
