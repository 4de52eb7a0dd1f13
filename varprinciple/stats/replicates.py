"""Which runs are independent replicates: re-probes of one trained network count once.

Only independently trained networks are replicates of a training procedure. Two runs of
one group are taken as the *same network* (re-probed, or copied) when

1. their noise tables are identical (:attr:`varprinciple.io.LogSet.identical`: a copy), or
2. their ``run.json`` carry the same ``checkpoint_fingerprint`` (a string; or an object
   mapping probe step to a string, equal at every step both record), or
3. they share ``method`` and a training seed (``train_seed``, else ``seed``) and their
   eigenvalues agree to :data:`EIGEN_RTOL` at every (step, block, rank) both probed (at
   least one): the same network re-probed with fresh noise draws.

The relation is closed transitively. Each network then counts once at group level: its
value is the mean over its runs (:func:`network_values`), ``n_runs`` and the df of every
interval over runs count networks, and a note names the merged runs.

Pairing across groups (:func:`pair_keys`): two units are compared paired on the networks
they share (one network probed with two noise sources) and, for runs collected with
``seed_scheme = "matched"``, on runs that started from the same initial weights and saw the
same data order (equal ``init_seed`` and ``order_seed`` in run.json): such runs of different
methods are matched pairs, not independent samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EIGEN_RTOL", "Networks", "find_networks", "network_values", "training_seed", "pair_keys"]

#: Relative tolerance at which two runs' eigenvalues are "the same eigen table" (a re-run
#: eigensolver on one checkpoint agrees far better; two trained networks differ far more).
EIGEN_RTOL = 1e-6


@dataclass(frozen=True)
class Networks:
    """The network each run belongs to.

    Attributes
    ----------
    network_of : dict
        run_id -> network id (the smallest run_id of its network).
    merged : list of (tuple of str, str)
        Networks with more than one run: their run ids and why they were merged.
    """

    network_of: dict
    merged: list

    def notes(self) -> list[str]:
        """One line per merged network."""
        return [f"runs {', '.join(ids)} are one network ({why}); counted once at group level"
                for ids, why in self.merged]


def training_seed(meta: Mapping):
    """The training seed recorded in run.json: ``train_seed``, else ``seed`` (None if neither).

    Examples
    --------
    >>> training_seed({"train_seed": 3, "probe_seed": 9}), training_seed({"seed": 1}), training_seed({})
    (3, 1, None)
    """
    for key in ("train_seed", "seed"):
        v = meta.get(key)
        if v is not None and not isinstance(v, (dict, list)):
            return v
    return None


def _eigen_map(run) -> dict:
    out = {}
    for b in run.blocks:
        h = b.is_hessian
        for d, lam in zip(b.direction[h].tolist(), b.eigenvalue[h].tolist()):
            out[(b.step, b.block, d)] = lam
    return out


def _same_eigen(a: dict, b: dict) -> bool:
    common = a.keys() & b.keys()
    if not common:
        return False
    x = np.array([a[k] for k in common])
    y = np.array([b[k] for k in common])
    return bool(np.all(np.abs(x - y) <= EIGEN_RTOL * np.maximum(np.abs(x), np.abs(y))))


def _same_checkpoint(a, b) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        common = a.keys() & b.keys()
        # every common step must agree: runs from one initialisation (matched seeds, step 0)
        # that trained apart are different networks at their later steps
        return bool(common) and all(str(a[k]) == str(b[k]) for k in common)
    return False


def find_networks(runs: Sequence, labels: Sequence[str], identical: Sequence[Sequence[str]] = ()) -> Networks:
    """Group the runs of each group label into networks (see the module docstring).

    Parameters
    ----------
    runs : sequence of varprinciple.io.RunLog
    labels : sequence of str
        Each run's group label; runs of different groups are never merged.
    identical : sequence of sequences of run ids
        Runs with identical noise tables (``LogSet.identical``).
    """
    ids = [r.run_id for r in runs]
    parent = {i: i for i in ids}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    why: dict[frozenset, set] = {}
    label_of = dict(zip(ids, labels))

    def union(i, j, reason):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
        why.setdefault(frozenset((i, j)), set()).add(reason)

    for grp in identical:
        grp = [g for g in grp if g in parent]
        for j in grp[1:]:
            if label_of[grp[0]] == label_of[j]:
                union(grp[0], j, "identical noise tables")
    by_label: dict[str, list] = {}
    for r, lab in zip(runs, labels):
        by_label.setdefault(lab, []).append(r)
    for rs in by_label.values():
        if len(rs) < 2:
            continue
        eig = {}
        for i, a in enumerate(rs):
            for b in rs[i + 1:]:
                if _same_checkpoint(a.meta.get("checkpoint_fingerprint"), b.meta.get("checkpoint_fingerprint")):
                    union(a.run_id, b.run_id, "same checkpoint_fingerprint")
                    continue
                sa, sb = training_seed(a.meta), training_seed(b.meta)
                if sa is None or sa != sb or a.method != b.method:
                    continue
                for r in (a, b):
                    if r.run_id not in eig:
                        eig[r.run_id] = _eigen_map(r)
                if _same_eigen(eig[a.run_id], eig[b.run_id]):
                    union(a.run_id, b.run_id, f"same seed {sa!r} and eigenvalues")
    network_of = {i: find(i) for i in ids}
    members: dict[str, list[str]] = {}
    for i in ids:
        members.setdefault(network_of[i], []).append(i)
    merged = []
    for root, ms in sorted(members.items()):
        if len(ms) < 2:
            continue
        reasons = sorted({w for pair, ws in why.items() if pair <= set(ms) for w in ws})
        merged.append((tuple(sorted(ms)), "; ".join(reasons)))
    return Networks(network_of, merged)


def network_values(run_ids: Sequence[str], values: np.ndarray, network_of: Mapping[str, str],
                   ses: np.ndarray | None = None) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """One value per network: the mean of its runs' finite values (NaN if none).

    Returns the network ids (in order of first appearance), their values, and (if ``ses``
    is given) the standard error of each mean, sqrt(sum se_i^2) / k over its k runs.

    Examples
    --------
    >>> network_values(["a", "b", "c"], np.array([1.0, 3.0, 5.0]), {"a": "a", "b": "a", "c": "c"})
    (['a', 'c'], array([2., 5.]), None)
    """
    values = np.asarray(values, float)
    order: list[str] = []
    idx: dict[str, list[int]] = {}
    for i, rid in enumerate(run_ids):
        net = network_of.get(rid, rid)
        if net not in idx:
            order.append(net)
            idx[net] = []
        idx[net].append(i)
    out = np.full(len(order), np.nan)
    se_out = None if ses is None else np.full(len(order), np.nan)
    for j, net in enumerate(order):
        ii = [i for i in idx[net] if np.isfinite(values[i])]
        if ii:
            out[j] = float(np.mean(values[ii]))
            if ses is not None:
                s = np.asarray(ses, float)[ii]
                se_out[j] = float(np.sqrt(np.sum(s ** 2)) / len(ii))
    return order, out, se_out


def pair_keys(runs: Sequence, network_of: Mapping[str, str]) -> dict[str, str]:
    """network id -> pairing key: ``matched:<init_seed>:<order_seed>`` for networks whose runs
    were collected with ``seed_scheme = "matched"``, else the network id itself.

    Examples
    --------
    >>> class R:
    ...     def __init__(self, rid, meta): self.run_id, self.meta = rid, meta
    >>> runs = [R("gd-s0", {"seed_scheme": "matched", "init_seed": 7, "order_seed": 9}),
    ...         R("sgd-s0", {"seed_scheme": "matched", "init_seed": 7, "order_seed": 9}), R("x", {})]
    >>> pair_keys(runs, {"gd-s0": "gd-s0", "sgd-s0": "sgd-s0", "x": "x"})
    {'gd-s0': 'matched:7:9', 'sgd-s0': 'matched:7:9', 'x': 'x'}
    """
    out: dict[str, str] = {}
    for run in runs:
        net = network_of.get(run.run_id, run.run_id)
        meta = run.meta if isinstance(run.meta, Mapping) else {}
        key = net
        if meta.get("seed_scheme") == "matched" and meta.get("init_seed") is not None \
                and meta.get("order_seed") is not None:
            key = f"matched:{meta['init_seed']}:{meta['order_seed']}"
        out.setdefault(net, key)
    return out
