"""NpyRows: inputs read from a .npy file by chunk equal the in-memory tensor, everywhere a probe uses them."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple import io  # noqa: E402
from varprinciple.collect import NpyRows  # noqa: E402
from varprinciple.collect.api import probe_model  # noqa: E402
from _budget import smallest_budget_mb  # noqa: E402
from varprinciple.collect.probe import ProbeSettings, probe  # noqa: E402
from varprinciple.errors import InputError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


def _saved(tmp_path, a, name="x.npy"):
    p = tmp_path / name
    np.save(p, a)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int64, np.bool_])
def test_every_index_form_matches_the_array(tmp_path, dtype):
    a = (np.random.default_rng(0).normal(size=(23, 3, 2)) * 5).astype(dtype)
    r = NpyRows(_saved(tmp_path, a))
    t = torch.from_numpy(a)
    assert len(r) == 23 and r.shape == t.shape and r.ndim == 3 and r.dtype == t.dtype
    assert r.nbytes == a.nbytes
    keys = [0, 22, -1, -23, np.int64(5), slice(None), slice(3, 9), slice(-4, None), slice(9, 3),
            slice(1, 20, 3), slice(None, None, -2), [4, 4, 0, 22], np.array([7, 8, 9]), np.array([], dtype=np.int64),
            torch.tensor([5, 1, -2]), torch.arange(10, 14), np.array(3), torch.tensor(-4),
            np.array([[1, 2], [22, 0]]), torch.tensor([[3], [4]]), [], np.array([], dtype=np.int32)]
    for key in keys:
        want = torch.from_numpy(np.array(a[key.numpy() if isinstance(key, torch.Tensor) else key]))
        got = r[key]
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape, key
        assert torch.equal(got, want), key
        if got.numel():
            got.view(-1)[0] = 0  # a fresh, writable buffer each time: the file is never touched
    assert torch.equal(r[:], t)


def test_bad_indices_and_files_say_so_in_one_line(tmp_path):
    r = NpyRows(_saved(tmp_path, np.zeros((4, 2), np.float32)))
    for key, exc in [(4, IndexError), (-5, IndexError), ([0, 9], IndexError), (torch.tensor([True, False]), TypeError),
                     ("a", TypeError), ((0, 1), TypeError), (np.array([0.5]), TypeError), ([True, False], TypeError),
                     (np.array([], dtype=float), TypeError), (None, TypeError), (Ellipsis, TypeError)]:
        with pytest.raises(exc):
            r[key]
    with pytest.raises(InputError, match=r"missing\.npy: no such file"):
        NpyRows(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file at all")
    with pytest.raises(InputError, match=r"bad\.npy: not a readable \.npy file"):
        NpyRows(bad)
    with pytest.raises(InputError, match=r"f\.npy: array is in Fortran order"):
        NpyRows(_saved(tmp_path, np.asfortranarray(np.zeros((4, 3))), "f.npy"))
    with pytest.raises(InputError, match=r"o\.npy: dtype object is not a plain numeric dtype"):
        p = tmp_path / "o.npy"
        np.save(p, np.array([1, "a"], dtype=object), allow_pickle=True)
        NpyRows(p)
    with pytest.raises(InputError, match=r"be\.npy: dtype >f8 is not in the machine's byte order"):
        NpyRows(_saved(tmp_path, np.zeros((3, 2), ">f8"), "be.npy"))
    with pytest.raises(InputError, match=r"s\.npy: a 0-d array has no rows"):
        NpyRows(_saved(tmp_path, np.float64(1.0), "s.npy"))
    for name, header in [("neg.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (-7, 3), }"),
                         ("open.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (7, 3, }")]:
        h = header.encode("latin1")
        h += b" " * (-(len(h) + 11) % 64) + b"\n"
        (tmp_path / name).write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + bytes(8 * 21))
        with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}: not a readable \.npy file"):
            NpyRows(tmp_path / name)
    t = _saved(tmp_path, np.zeros((100, 4)), "t.npy")
    t.write_bytes(t.read_bytes()[:-8])
    with pytest.raises(InputError, match=r"t\.npy: truncated"):
        NpyRows(t)
    for msg in ("missing", "bad"):
        try:
            NpyRows(tmp_path / f"{msg}.npy")
        except InputError as exc:
            assert "\n" not in str(exc)


def test_pickles_by_path_and_moves_between_devices(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(6, 2)
    r = NpyRows(_saved(tmp_path, a))
    r[0]  # opens the file
    r2 = pickle.loads(pickle.dumps(r))
    assert torch.equal(r2[1:4], r[1:4]) and r2.path == r.path
    assert r.to("cpu") is r and r.to(torch.float64) is r and r[2:3].device.type == "cpu"
    meta = r.to("meta")  # another device: a new view whose rows land there
    assert meta is not r and meta.device.type == "meta" and meta[2:3].device.type == "meta"
    assert r.detach() is r
    r.close()
    assert torch.equal(r[5], torch.tensor([10.0, 11.0]))  # reopens after close


_SHARED: list = []  # the parent's NpyRows, inherited (not pickled) by forked workers


def _read_rows(idx):
    return _SHARED[0][idx].numpy()


def test_threads_and_forked_processes_read_the_right_rows(tmp_path):
    # one file descriptor shared by threads and by forked children: positional reads, no shared seek
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor
    a = np.random.default_rng(1).normal(size=(500, 7))
    r = NpyRows(_saved(tmp_path, a))
    where = os.lseek(r._fd, 123, os.SEEK_SET)
    np.testing.assert_array_equal(r[[7, 3, 499]].numpy(), a[[7, 3, 499]])
    assert os.lseek(r._fd, 0, os.SEEK_CUR) == where  # reads never move the shared file position
    idx = [np.random.default_rng(s).integers(0, 500, 300) for s in range(8)]
    with ThreadPoolExecutor(4) as ex:
        for i, got in zip(idx, ex.map(lambda i: r[i].numpy(), idx)):
            np.testing.assert_array_equal(got, a[i])
    if "fork" in multiprocessing.get_all_start_methods():
        _SHARED[:] = [r]
        try:
            with multiprocessing.get_context("fork").Pool(2) as pool:
                for i, got in zip(idx, pool.map(_read_rows, idx, chunksize=1)):
                    np.testing.assert_array_equal(got, a[i])
        finally:
            _SHARED.clear()


def test_reads_see_the_file_opened_even_if_the_path_is_replaced(tmp_path):
    p = _saved(tmp_path, np.arange(6.0).reshape(3, 2))
    r = NpyRows(p)
    p.unlink()
    np.save(p, np.zeros((9, 9), dtype=np.int8))
    assert torch.equal(r[2], torch.tensor([4.0, 5.0], dtype=torch.float64))


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(0.25), nn.Linear(3 * 9, 4))


@pytest.mark.parametrize("budget", [2048, "smallest"])
def test_probe_on_npy_rows_equals_the_in_memory_probe(tmp_path, budget):
    # every stage (eigsh HVPs, sgd per-sample pass and full-vector draws, dropout draws and the
    # two-mask pass, Hutchinson, Tr(HC)), both with the whole batch kept and chunked by a tiny budget
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 1, 6, 6, generator=g)
    y = torch.randint(0, 4, (50,), generator=g)
    rows = NpyRows(_saved(tmp_path, X.numpy()))
    s = ProbeSettings(top_k=3, n_samples=25, batch_size=8, n_random=2, hutchinson_probes=5, tr_hc_samples=5)
    if budget == "smallest":  # the smallest budget the probe accepts: every stage chunked
        budget = smallest_budget_mb(_net(), "cross_entropy", X, y, s)
    s = replace(s, memory_budget_mb=budget)
    a = probe(_net(), "cross_entropy", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(1))
    b = probe(_net(), "cross_entropy", rows, y, settings=s, step=0, generator=torch.Generator().manual_seed(1))
    assert (a.info["plan"]["hessian_chunk"] is None) == (budget == 2048)
    for key in ("hessian", "hessian_chunk", "dropout_data_chunk", "dropout_pair_chunk"):
        assert a.info["plan"].get(key) == b.info["plan"].get(key), key
    np.testing.assert_allclose(b.eigen["eigenvalue"], a.eigen["eigenvalue"], rtol=1e-12)
    np.testing.assert_allclose(b.noise["value"], a.noise["value"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.exact_variance["variance"], a.exact_variance["variance"], rtol=1e-12)
    np.testing.assert_allclose(b.flatness["estimate"], a.flatness["estimate"], rtol=1e-12)


def test_probe_model_accepts_npy_rows_and_refuses_other_types(tmp_path):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
    rows = NpyRows(_saved(tmp_path, X.numpy()))
    s = ProbeSettings(top_k=2, n_samples=10, batch_size=5, n_random=1, hutchinson_probes=2, tr_hc_samples=0,
                      sources=("sgd",))
    out = probe_model(nn.Linear(3, 1), "mse", rows, y, out=tmp_path / "logs" / "r", run_id="r", method="gd",
                      settings=s)
    run = io.read_run(out)
    assert run.run_id == "r" and run.meta["n_train"] == 30 and len(run.eigen) == 2
    with pytest.raises(InputError, match=r"`X` must be a torch.Tensor, numpy array or NpyRows; got str"):
        probe_model(nn.Linear(3, 1), "mse", "x.npy", y, out=tmp_path / "logs" / "s", run_id="s", method="gd", settings=s)
    with pytest.raises(InputError, match=r"`X` must be a torch tensor or NpyRows"):
        probe(nn.Linear(3, 1), "mse", X.numpy(), y, settings=s, step=0, generator=torch.Generator())


class _Tokens(nn.Module):
    """Integer tokens -> embedding -> attention layer (with dropout) -> dict output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(7, 4)
        self.layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.1, batch_first=True)
        self.layer.self_attn.dropout = 0.0  # functional attention dropout is refused by the dropout source
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.head(self.layer(self.emb(x)).mean(1))}


def test_integer_token_rows_and_per_layer_blocks(tmp_path):
    # int64 token rows on disk (the transformer path) with per-layer blocks
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 7, (30, 4), generator=g)
    y = X[:, 0] % 3
    rows = NpyRows(_saved(tmp_path, X.numpy()))
    assert rows.dtype == torch.int64
    s = ProbeSettings(top_k=2, n_samples=12, batch_size=5, n_random=1, hutchinson_probes=2, tr_hc_samples=3,
                      blocks="layers")
    a = probe(_Tokens(), "cross_entropy", X, y, settings=s, step=3, generator=torch.Generator().manual_seed(2))
    b = probe(_Tokens(), "cross_entropy", rows, y, settings=s, step=3, generator=torch.Generator().manual_seed(2))
    assert set(a.eigen["block"]) == set(b.eigen["block"])
    assert len(set(a.eigen["block"])) > 2
    np.testing.assert_allclose(b.eigen["eigenvalue"], a.eigen["eigenvalue"], rtol=1e-12)
    np.testing.assert_allclose(b.noise["value"], a.noise["value"], rtol=1e-12, atol=1e-15)
