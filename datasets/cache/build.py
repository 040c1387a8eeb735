"""Building an image cache's array (``datasets.cache.images``): every image decoded once into a temp
file, by this process or by forked workers that each fill their own share of it.

The workers are plain processes with no queue or lock between them, so a stop never leaves
one holding a lock the others or the parent wait for (a ``multiprocessing.Pool`` whose workers
get SIGTERM with the rest of the process group hangs in ``terminate()``). SIGTERM or Ctrl-C
during a build removes the temp file and ends the workers without a traceback; a temp file of
a process that is gone (SIGKILL, a crashed machine) is removed by ``remove_stale_temps``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.labels import Annotation
from datasets.preprocessing import Preprocessing
from datasets.transforms import crop_to_bbox, load_image, resize_stages
from utils.errors import UserError

log = logging.getLogger(__name__)

_CHUNK = 32  # images a worker takes at a time; chunks are dealt out in turn
_POLL_S = 0.1  # how often the parent updates the progress bar and looks at its workers
_HOST = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"\.(?P<build>.+)\.u8\.(?:(?P<host>[A-Za-z0-9_-]+)\.)?(?P<pid>\d+)\.tmp")


def decode_resized(path: Path, bbox: Sequence[float], preprocessing: Preprocessing) -> Image.Image:
    """One image through decode -> [bbox crop / erase] -> resize -> [grayscale]."""
    img = load_image(path)
    if preprocessing.crop_to_bboxes:
        img = crop_to_bbox(img, bbox, preprocessing.erase_background)
    return resize_stages(preprocessing)(img)


def image_array(img: Image.Image) -> np.ndarray:
    """A PIL image as ``(H, W, C)`` uint8."""
    array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def temp_path(cache_dir: Path, build: str) -> Path:
    """Where this process writes the array of ``build`` (``<split>-<key>``)."""
    return cache_dir / f".{build}.u8.{_HOST}.{os.getpid()}.tmp"


def build_array(
    tmp: Path,
    shape: tuple,
    image_dir: Path,
    samples: Sequence[Annotation],
    preprocessing: Preprocessing,
    workers: int = 1,
    progress: bool = True,
    label: str = "",
) -> None:
    """Decode ``samples`` into a new uint8 array file ``tmp`` of ``shape``; removed again
    when the build fails or is stopped."""
    with _sigterm_stops_the_build():  # outside: the temp file is gone before the process
        try:
            with tmp.open("wb") as handle:
                handle.truncate(int(np.prod(shape)))
            jobs = [(str(image_dir / s.fname), tuple(s.bbox)) for s in samples]
            chunks = [(i, min(i + _CHUNK, len(jobs))) for i in range(0, len(jobs), _CHUNK)]
            bar = tqdm(total=len(jobs), desc=f"caching {label}", unit="img", disable=not progress)
            array = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
            if workers <= 1:
                for span in chunks:
                    bar.update(_fill(array, jobs, span, preprocessing))
            else:
                _fill_in_workers(array, jobs, chunks, preprocessing, workers, bar)
            array.flush()
            del array
            bar.close()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _fill(array: np.ndarray, jobs: list, span: tuple[int, int], pre: Preprocessing) -> int:
    for index in range(*span):
        path, bbox = jobs[index]
        try:
            img = decode_resized(Path(path), bbox, pre)
        except (OSError, ValueError) as err:  # PIL's errors for truncated or foreign files
            raise UserError(
                f"image '{path}' could not be decoded ({type(err).__name__}: {err}). Prepare "
                "the dataset again with 'python prepare_stanford_dataset.py --force'."
            ) from None
        array[index] = image_array(img)
    return span[1] - span[0]


def _fill_in_workers(array, jobs, chunks, preprocessing, workers, bar) -> None:
    # fork: workers inherit the job list and the mapped file instead of re-importing torch each.
    context = multiprocessing.get_context("fork")
    done = context.Array("q", workers, lock=False)  # images decoded, one count per worker
    pipes, processes = [], []
    for number in range(workers):
        reader, writer = context.Pipe(duplex=False)
        share = chunks[number::workers]
        args = (array, jobs, share, preprocessing, done, number, writer)
        processes.append(context.Process(target=_worker, args=args, daemon=True))
        pipes.append(reader)
    try:
        for process in processes:
            process.start()
        while any(p.is_alive() for p in processes):
            time.sleep(_POLL_S)
            bar.update(sum(done) - bar.n)
            _raise_failure(processes, pipes)
        _raise_failure(processes, pipes)
        bar.update(sum(done) - bar.n)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()  # SIGKILL: quiet, and it holds nothing anyone waits for
            process.join()


def _worker(array, jobs, share, preprocessing, done, number, pipe) -> None:
    # The parent answers Ctrl-C and SIGTERM; a worker just stops, without the traceback an
    # inherited Python handler would print.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        for span in share:
            done[number] += _fill(array, jobs, span, preprocessing)
        array.flush()
    except Exception as err:  # the parent raises it: a UserError's message, else its kind
        pipe.send(str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
        os._exit(1)


def _raise_failure(processes, pipes) -> None:
    for process, pipe in zip(processes, pipes):
        if process.exitcode in (None, 0):
            continue
        if pipe.poll():
            raise UserError(pipe.recv())
        raise UserError(
            f"a process building the image cache ended by signal {-process.exitcode} (out of "
            "memory?). Set num_workers lower, or cache_images: false."
        )


# ---- stopping -----------------------------------------------------------------------------------
class _Terminated(BaseException):
    """SIGTERM during a build, where nothing else handles it."""


@contextmanager
def _sigterm_stops_the_build() -> Iterator[None]:
    """Where SIGTERM has its default action (end at once, leaving a full-size temp file), it
    raises ``_Terminated`` in the build instead; once the temp file is gone and the workers
    ended, the process ends by SIGTERM as it would have. A handler of the program's own (the
    training's) is left to act: it raises, and the build cleans up the same way."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log.warning("SIGTERM while building the image cache: stopped, nothing of it kept")
        os.kill(os.getpid(), signal.SIGTERM)
        raise  # not reached: the default action ends the process
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def remove_stale_temps(cache_dir: Path, building: str | None = None) -> list[Path]:
    """Remove the temp files of builds whose process is gone: on this machine, a process that
    no longer runs; for ``building`` (``<split>-<key>``, whose lock the caller holds), any.
    Returns what was removed."""
    removed = []
    try:
        names = [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
    except OSError:
        return removed
    for path in names:
        match = _TEMP.fullmatch(path.name)
        if match is None:
            continue
        here = match["host"] in (None, _HOST)  # no host: the name before hosts were added
        if match["build"] == building or (here and not _process_runs(int(match["pid"]))):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d temp file(s) of image cache builds that stopped", len(removed))
    return removed


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none, or a number no process can have
        return False
    except PermissionError:  # another user's
        return True
    return True
