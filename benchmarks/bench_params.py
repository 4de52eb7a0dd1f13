"""Benchmark: a probe's memory per stage against its budget, and its time, at ~1M and ~10M parameters.

Run (each case in its own process; Linux: VmHWM and ``/proc/self/clear_refs``)::

    PYTHONPATH=. python benchmarks/bench_params.py --case 1m          # MLP 784-1024-160-10, n = 2,000
    PYTHONPATH=. python benchmarks/bench_params.py --case 10m         # MLP 784-4096-1536-10, n = 256
    PYTHONPATH=. python benchmarks/bench_params.py --spec '{"widths": [...], "n": 64, "settings": {...}}'

Synthetic data (Gaussian inputs, random labels), the MLP at initialisation with
``nn.Dropout(0.2)`` after each hidden layer, cross-entropy, float64 probe, default settings
unless the case says otherwise (``--set key=value`` overrides, e.g. ``--set top_k=5``).

The peak of a stage is VmHWM over the stage, reset at its start through ``/proc/self/clear_refs``,
minus the RSS just before the probe (the fixed start-up: the imports, the data, the model and a
warm-up probe of a small model that loads torch's lazily loaded code; printed as
``startup_rss_mb``). ``setup`` is the part before the first stage (the gradient graph, the timed
HVP and per-sample chunk). Prints one JSON line per case: per-stage measured MB, the plan's
per-stage estimates, seconds per stage, or the up-front refusal. ``tests/test_memory.py`` runs
``--spec`` on a small model.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import torch
from torch import nn


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(key)


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mlp(widths, drop: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers += [nn.ReLU()] + ([nn.Dropout(drop)] if drop else [])
    return nn.Sequential(*layers)


def main(spec: dict) -> dict:
    from varprinciple.collect import progress as P
    from varprinciple.collect.probe import ProbeSettings, probe

    torch.set_num_threads(int(spec.get("threads", 1)))
    t_import = _status("VmRSS")
    widths, n = spec["widths"], int(spec["n"])
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, widths[0], generator=g)
    y = torch.randint(0, widths[-1], (n,), generator=g)
    net = mlp(widths, spec.get("drop", 0.2))
    small = ProbeSettings(top_k=2, n_samples=10, batch_size=4, n_random=1, hutchinson_probes=2, tr_hc_samples=3,
                          sources=tuple(spec["settings"].get("sources", ("sgd", "dropout", "isotropic"))))
    probe(mlp([widths[0], 16, widths[-1]], spec.get("drop", 0.2)), "cross_entropy", X[:16], y[:16], settings=small,
          step=0, generator=torch.Generator().manual_seed(0))  # warm-up: torch's lazily loaded code
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()}
    if kw.get("memory_budget_mb") == "smallest":  # the budget the refusal names for these settings
        import re
        try:
            probe(net, "cross_entropy", X, y, settings=ProbeSettings(**{**kw, "memory_budget_mb": 1e-6}), step=0,
                  generator=torch.Generator().manual_seed(1))
        except Exception as exc:  # noqa: BLE001
            kw["memory_budget_mb"] = float(re.search(r"needs at least ([\d.]+) MB", str(exc)).group(1))
    settings = ProbeSettings(**kw)
    peaks: dict[str, float] = {}
    orig = P.ProbeProgress.stage

    @contextlib.contextmanager
    def stage(self, name):
        if not peaks:  # before the first stage: the gradient graph, the timed HVP and per-sample chunk
            peaks["setup"] = _status("VmHWM") - base
        _reset_hwm()
        t = time.perf_counter()
        with orig(self, name) as st:
            yield st
        peaks[name] = _status("VmHWM") - base
        print(f"stage {name}: {time.perf_counter() - t:.1f} s, peak {peaks[name]:.0f} MB above start-up",
              file=sys.stderr, flush=True)

    P.ProbeProgress.stage = stage
    _reset_hwm()
    base = _status("VmRSS")
    t0 = time.perf_counter()
    out = {"spec": spec, "budget_mb": settings.memory_budget_mb, "startup_rss_mb": base, "import_rss_mb": t_import}
    try:
        res = probe(net, "cross_entropy", X, y, settings=settings, step=0, generator=torch.Generator().manual_seed(1))
    except Exception as exc:  # noqa: BLE001 -- the refusal is a result here
        out.update(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
        return out
    out.update(seconds=time.perf_counter() - t0, measured_mb=peaks, peak_rss_mb=_status("VmHWM"),
               timings=res.timings, n_hvp=res.n_hvp, n_params=res.info["n_params"],
               plan={k: v for k, v in res.info["plan"].items() if k not in ("stages", "summary")},
               lambda_max=float(res.eigen["eigenvalue"].iloc[0]))
    return out


CASES = {
    "1m": {"widths": [784, 1024, 160, 10], "n": 2000, "settings": {}},
    "10m": {"widths": [784, 4096, 1536, 10], "n": 256, "settings": {}},
}


def _value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=sorted(CASES))
    ap.add_argument("--spec", help="a JSON case: widths, n, settings (ProbeSettings keywords), threads")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    spec = json.loads(args.spec) if args.spec else json.loads(json.dumps(CASES[args.case or "1m"]))
    spec.setdefault("threads", args.threads)
    for kv in args.set:
        key, _, val = kv.partition("=")
        spec["settings"][key] = _value(val)
    print(json.dumps(main(spec)), flush=True)
