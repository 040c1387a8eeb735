"""Finds, on the CPU, the places where code run on a GPU would make the host wait for it.

``DeviceWaits`` runs code on PyTorch's ``meta`` device, which has shapes but no values, and
keeps a CPU twin of every meta tensor, computed alongside, so that control flow sees the real
values. Each operation that needs a device value on the host is recorded: a read (``.item()``,
``bool()``, a data-dependent shape such as ``nonzero``) or a copy between the host and the
device (``.cpu()``, ``.tolist()``, ``torch.tensor(data, device=...)``). On a GPU each is a point where the CPU stops until the GPU has caught up, and
the GPU then idles while the CPU queues the next kernels.

Tensors on the meta device must be made inside the mode (``module.to("meta")``, factories with
``device="meta"``), so that each has its twin.
"""

from __future__ import annotations

import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten
META = torch.device("meta")
# Operations whose result is a host value, or whose output shape depends on the values.
_READS = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._linalg_check_errors.default,  # linalg's error check reads the device's info codes
}


@dataclass(frozen=True)
class Wait:
    kind: str  # "read", "copy to host" or "copy to device"
    op: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.op}) at {self.where}"


def _is_meta(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "meta"


def _view(tensor: torch.Tensor) -> tuple:
    return (
        tensor.untyped_storage()._cdata,
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
    )


def _caller() -> str:
    """The innermost frame outside torch and this file."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("device_waits.py"):
            return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.line}"
    return "?"


_FROM_DATA = (torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor)


class _FromData(TorchFunctionMode):
    """Tensors made from Python data straight on the meta device never reach the dispatcher:
    make them on the CPU and move them, so that the move gives them a twin."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        from_data = not any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(args))
        if (
            func in _FROM_DATA
            and from_data
            and device is not None
            and torch.device(device).type == "meta"
        ):
            return func(*args, **{**kwargs, "device": "cpu"}).to(META)
        return func(*args, **kwargs)


class DeviceWaits(TorchDispatchMode):
    """Records the host waits of the code run inside ``per_batch()`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.twins: WeakIdKeyDictionary = WeakIdKeyDictionary()
        # A Parameter made from a moved tensor (module.to) shares its storage but is another
        # Python object, made without the dispatcher: found by storage and view.
        self._by_view: dict[tuple, torch.Tensor] = {}
        self.waits: list[Wait] = []
        self._recording = False
        self._from_data = _FromData()

    def __enter__(self):
        self._from_data.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._from_data.__exit__(*exc)

    @contextmanager
    def per_batch(self):
        self._recording = True
        try:
            yield self
        finally:
            self._recording = False

    def _record(self, kind: str, func) -> None:
        if self._recording:
            self.waits.append(Wait(kind, str(func), _caller()))

    def _twin(self, value):
        if _is_meta(value):
            if value in self.twins:
                return self.twins[value]
            if _view(value) in self._by_view:
                return self._by_view[_view(value)]
            raise RuntimeError("a meta tensor made outside DeviceWaits has no CPU twin")
        if isinstance(value, torch.device) and value.type == "meta":
            return torch.device("cpu")
        return value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = pytree.arg_tree_leaves(*args, **kwargs)
        to_meta = any(isinstance(v, torch.device) and v.type == "meta" for v in leaves) or (
            kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "meta"
        )
        if not any(_is_meta(v) for v in leaves) and not to_meta:
            return func(*args, **kwargs)

        cpu_args, cpu_kwargs = pytree.tree_map(self._twin, (args, kwargs))
        shadow = func(*cpu_args, **cpu_kwargs)
        if func in _READS:
            self._record("read", func)
            if isinstance(shadow, torch.Tensor):  # a data-dependent shape
                out = torch.empty_like(shadow, device=META)
                self.twins[out] = shadow
                return out
            return shadow
        sources = [v for v in leaves if isinstance(v, torch.Tensor)]
        if func is aten._to_copy.default and sources:
            source, target = sources[0].device.type, torch.device(kwargs.get("device") or "meta")
            if source == "meta" and target.type == "cpu":
                self._record("copy to host", func)
                return shadow
            if source != "meta" and target.type == "meta" and sources[0].dim() > 0:
                self._record("copy to device", func)
        if func is aten.copy_.default and not _is_meta(args[0]):
            self._record("copy to host", func)
            return shadow

        out = func(*args, **kwargs)
        for meta, twin in zip(pytree.tree_leaves(out), pytree.tree_leaves(shadow), strict=True):
            if _is_meta(meta):
                self.twins[meta] = twin
                self._by_view[_view(meta)] = twin
        return out

    def twin(self, tensor: torch.Tensor) -> torch.Tensor:
        """The CPU values of a meta tensor."""
        return self._twin(tensor)
