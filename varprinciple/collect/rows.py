"""Inputs read from a ``.npy`` file chunk by chunk, so a probe's memory does not grow with n.

A probe touches its inputs only a chunk of rows at a time when the budget makes it chunk
(HVPs, per-sample gradients, dropout draws; docs/probes.md, "Memory"). With the inputs as an
in-memory tensor they are still held whole, outside the budget: at n = 60,000 MNIST-shaped
float32 inputs are 180 MB. :class:`NpyRows` stands in for that tensor: it reads exactly the
rows asked for from the file (plain reads into a fresh buffer; no memory mapping, so
nothing of the file stays resident in the process — the operating system's page cache keeps
it warm without counting against the process)::

    X = NpyRows("inputs.npy")        # shape (n, ...), C order, any numeric dtype
    res = probe(model, "cross_entropy", X, y, settings=s, step=0, generator=g)

``y`` stays a tensor (one label or target row per sample; small beside the inputs).
Indexing returns tensors: an integer gives one row, a ``start:stop`` slice a contiguous block
(one read), an integer tensor/array/list the rows in that order (one read per row; a
contiguous ascending run is one read). A full-batch use (``rows[:]``) reads everything; the
probe does that only when the budget lets the whole batch's graph be kept.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

__all__ = ["NpyRows"]


class NpyRows:
    """Row-wise, read-only access to a ``.npy`` array on disk (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
        A ``.npy`` file (format 1.0–3.0) holding one row per sample, C order, a numeric or
        boolean dtype torch supports.
    device : str or torch.device
        Where the returned tensors are put (``rows.to(device)`` gives a copy for another one).
    """

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.device = torch.device(device)
        self._fd = None
        self._lock = threading.Lock()
        # opened first and kept: the header and every read come from this one file even if the
        # path is replaced later; reads are positional (os.preadv/os.pread, no shared file
        # position), so threads and forked processes cannot interleave a seek and a read
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{self.path}: cannot be opened ({exc.strerror})") from None
        try:
            self._parse_header()
        except BaseException:
            self.close()
            raise

    def _parse_header(self) -> None:
        try:
            with os.fdopen(os.dup(self._fd), "rb") as f:
                major, _minor = np.lib.format.read_magic(f)
                if major == 1:
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif major in (2, 3):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {major}")
                self._offset = f.tell()
        except Exception as exc:  # noqa: BLE001 (a corrupt header raises ValueError, SyntaxError, TokenError, ...)
            raise InputError(f"{self.path}: not a readable .npy file ({' '.join(str(exc).split())[:200]})") from None
        if any(not isinstance(d, int) or d < 0 for d in shape):
            raise InputError(f"{self.path}: not a readable .npy file (shape {shape} in its header)")
        if fortran and len(shape) > 1:
            raise InputError(f"{self.path}: array is in Fortran order; save it in C order "
                             "(np.save(path, np.ascontiguousarray(a)))")
        if dtype.hasobject or dtype.fields is not None:
            raise InputError(f"{self.path}: dtype {dtype} is not a plain numeric dtype")
        if not dtype.isnative:
            raise InputError(f"{self.path}: dtype {dtype.str} is not in the machine's byte order")
        try:
            self._torch_dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
        except TypeError:
            raise InputError(f"{self.path}: dtype {dtype} has no torch equivalent") from None
        if len(shape) < 1:
            raise InputError(f"{self.path}: a 0-d array has no rows")
        self._np_dtype = dtype
        self.shape = torch.Size(shape)
        self._row_items = int(np.prod(shape[1:], dtype=np.int64))
        self._row_bytes = self._row_items * dtype.itemsize
        need = self._offset + self._row_bytes * shape[0]
        size = os.fstat(self._fd).st_size
        if size < need:
            raise InputError(f"{self.path}: truncated ({size} bytes; the header's shape {tuple(shape)} "
                             f"needs {need})")

    # ---------------------------------------------------------------- tensor-like surface
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self._torch_dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array (what holding it in memory would cost)."""
        return self._row_bytes * self.shape[0]

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"NpyRows({str(self.path)!r}, shape={tuple(self.shape)}, dtype={self._np_dtype})"

    def to(self, device=None, *args, **kwargs) -> "NpyRows":
        """A view putting its rows on ``device`` (dtype conversions are the probe's job)."""
        if device is None or isinstance(device, torch.dtype) or torch.device(device) == self.device:
            return self
        return NpyRows(self.path, device=device)

    def detach(self) -> "NpyRows":
        return self

    def __getstate__(self):  # picklable for process pools: reopened (and its header re-read) there
        return {"path": self.path, "device": str(self.device)}

    def __setstate__(self, state):
        self.__init__(state["path"], device=state["device"])

    def __getitem__(self, key) -> torch.Tensor:
        n = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for {n} rows of {self.path}")
            return self._read(i % n, 1).reshape(self.shape[1:]).to(self.device)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read(start, max(stop - start, 0)).to(self.device)
            idx = np.arange(start, stop, step)
        elif isinstance(key, torch.Tensor):
            if key.dtype == torch.bool:
                raise TypeError("NpyRows: boolean masks are not supported; pass row indices")
            idx = key.detach().cpu().numpy()
        elif isinstance(key, list):
            idx = np.asarray(key) if key else np.zeros(0, dtype=np.int64)
        elif isinstance(key, np.ndarray):
            idx = key
        else:
            raise TypeError(f"NpyRows indices must be an int, a slice or an integer array/list (rows only); "
                            f"got {type(key).__name__}")
        if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"NpyRows indices must be integers; got dtype {idx.dtype}")
        if idx.ndim == 0:  # a 0-d index array is one row, as in numpy
            return self[int(idx)]
        shape = idx.shape
        idx = idx.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows of {self.path}")
        idx = idx % n if idx.size else idx
        if idx.size and np.all(np.diff(idx) == 1):
            out = self._read(int(idx[0]), int(idx.size))
        else:
            buf = np.empty((idx.size, *self.shape[1:]), dtype=self._np_dtype)
            flat = buf.reshape(idx.size, self._row_items)
            for j, i in enumerate(idx):
                self._read_into(int(i), flat[j])
            out = torch.from_numpy(buf)
        return out.reshape(*shape, *self.shape[1:]).to(self.device)

    # ---------------------------------------------------------------- reading
    def _read(self, start: int, count: int) -> torch.Tensor:
        out = np.empty((count, *self.shape[1:]), dtype=self._np_dtype)
        if count:
            self._read_into(start, out)
        return torch.from_numpy(out)

    def _read_into(self, start: int, out: np.ndarray) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, offset = 0, self._offset + start * self._row_bytes
        if self._fd is None:  # closed: reopen
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        while pos < len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(self._fd, [view[pos:]], offset + pos)
            elif hasattr(os, "pread"):
                chunk = os.pread(self._fd, len(view) - pos, offset + pos)
                view[pos:pos + len(chunk)] = chunk
                got = len(chunk)
            else:  # no positional reads (Windows): a lock keeps seek + read together
                with self._lock:
                    os.lseek(self._fd, offset + pos, os.SEEK_SET)
                    chunk = os.read(self._fd, len(view) - pos)
                view[pos:pos + len(chunk)] = chunk
                got = len(chunk)
            if not got:
                raise InputError(f"{self.path}: file shrank while reading (at byte {offset + pos})")
            pos += got

    def close(self) -> None:
        """Close the file (a later read reopens it)."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass
