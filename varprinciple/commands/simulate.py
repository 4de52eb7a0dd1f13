"""``varprinciple simulate OUT``: write a log set with a known truth (see varprinciple.simulate)."""

from __future__ import annotations

import argparse

from ..errors import InputError

HELP = "write a simulated log set (schema v1) with a known truth"


def _pairs(option: str, items: list[str] | None, *, value=float) -> dict:
    """Parse repeated/comma-separated NAME=VALUE items."""
    out: dict = {}
    for item in items or []:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, val = part.partition("=")
            if not sep or not name.strip() or not val.strip():
                raise InputError(f"`{option}` takes NAME=VALUE items; got {part!r}.")
            try:
                out[name.strip()] = value(val.strip())
            except ValueError:
                raise InputError(f"`{option}` value for {name.strip()!r} must be a number; got {val!r}.") from None
    return out


def _names(items: list[str] | None) -> list[str] | None:
    if items is None:
        return None
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


def _ints(option: str, items: list[str] | None) -> list[int] | None:
    names = _names(items)
    if names is None:
        return None
    try:
        return [int(x) for x in names]
    except ValueError:
        raise InputError(f"`{option}` takes integers; got {names!r}.") from None


def add_design_options(p: argparse.ArgumentParser, *, with_counts: bool = True) -> None:
    """Options of the simulated noise model, shared with ``varprinciple power``."""
    g = p.add_argument_group("noise model")
    g.add_argument("--slope-sd", type=float, default=0.1, help="run-to-run SD of the exponent b (default 0.1)")
    g.add_argument("--scatter", type=float, default=0.2,
                   help="SD of direction deviations from the power law, natural-log units (default 0.2)")
    g.add_argument("--intercept", type=float, default=-3.5, help="a in log var = a + b log lambda (default -3.5)")
    g.add_argument("--noise", action="append", metavar="FAMILY|SOURCE=FAMILY",
                   help="noise family: gaussian, student-t or masked (dropout-like); one family for every "
                        "source or SOURCE=FAMILY, repeatable (default: masked for 'dropout', else gaussian)")
    g.add_argument("--df", type=float, default=8.0, help="degrees of freedom of student-t noise, >= 5 (default 8)")
    g.add_argument("--drop-prob", type=float, default=0.5,
                   help="DROP probability of masked noise (torch.nn.Dropout's p; default 0.5)")
    g.add_argument("--units", type=int, default=None, help="units of masked noise (default: directions + random)")
    g.add_argument("--correlation", type=float, default=0.3,
                   help="correlation strength of projections across directions, in [0, 1) (default 0.3)")
    g.add_argument("--nonpositive", type=int, default=2, help="directions with eigenvalue <= 0 (default 2)")
    g.add_argument("--eigen-decay", type=float, default=1.0, help="lambda_i ~ (i+1)^-decay (default 1)")
    g.add_argument("--lambda-max", type=float, default=10.0, help="typical top eigenvalue (default 10)")
    g.add_argument("--random", type=int, default=0, help="random directions per probe (default 0)")
    g.add_argument("--random-curvature", type=float, default=1e-3,
                   help="random directions act like curvature random_curvature * lambda_max (default 1e-3)")
    g.add_argument("--steps", action="append", metavar="STEP[,STEP...]", help="probe steps (default 0)")
    g.add_argument("--blocks", action="append", metavar="NAME[,NAME...]",
                   help="parameter blocks (adds a block column; default: whole network only)")
    if with_counts:
        g.add_argument("--directions", type=int, default=20, help="Hessian directions per probe (default 20)")
        g.add_argument("--samples", type=int, default=200, help="noise draws per probe and source (default 200)")


def noise_option(items: list[str] | None):
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0] and "," not in items[0]:
        return items[0]
    return _pairs("--noise", items, value=str)


def design_kwargs(args) -> dict:
    """Keyword arguments of :func:`varprinciple.simulate.simulate` from the shared options."""
    kw = dict(slope_sd=args.slope_sd, scatter=args.scatter, intercept=args.intercept,
              noise=noise_option(args.noise), df=args.df, drop_prob=args.drop_prob, n_units=args.units,
              correlation=args.correlation, n_nonpositive=args.nonpositive, eigen_decay=args.eigen_decay,
              lambda_max=args.lambda_max, n_random=args.random, random_curvature=args.random_curvature,
              blocks=_names(args.blocks))
    steps = _ints("--steps", args.steps)
    if steps is not None:
        kw["steps"] = steps
    return kw


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help=HELP, description=HELP + ". The truth goes into each run.json "
                              "('truth') and into OUT/truth.json.")
    p.add_argument("out", metavar="OUT", help="log-set directory to create")
    p.add_argument("--method", action="append", metavar="NAME=SLOPE",
                   help="training method and its mean exponent b, repeatable or comma-separated "
                        "(default sgd=1.0,dropout=1.0)")
    p.add_argument("--runs", type=int, default=4, help="runs (seeds) per method (default 4)")
    p.add_argument("--sources", action="append", metavar="NAME[,NAME...]",
                   help="noise sources logged in every run; 'isotropic' is the b = 0 control "
                        "(default sgd,dropout,isotropic)")
    p.add_argument("--source-offset", action="append", metavar="SOURCE=DELTA",
                   help="add DELTA to the exponent of SOURCE (default 0)")
    add_design_options(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--float32", action="store_true", help="store noise values as float32 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if simulate wrote it before")
    p.set_defaults(func=handler)


def handler(args) -> int:
    import numpy as np

    from ..simulate import simulate

    methods = _pairs("--method", args.method) or None
    kw = design_kwargs(args)
    sources = _names(args.sources)
    if sources is not None:
        kw["sources"] = sources
    truth = simulate(args.out, methods=methods, runs_per_method=args.runs,
                     source_offsets=_pairs("--source-offset", args.source_offset) or None,
                     n_directions=args.directions, n_samples=args.samples, float32=args.float32,
                     overwrite=args.overwrite,
                     rng=np.random.default_rng(args.seed), **kw)
    df = truth.to_frame()
    n_runs = df["run_id"].nunique()
    print(f"wrote {n_runs} runs to {args.out} (truth in {args.out}/truth.json)")
    summary = (df.groupby(["method", "source"], sort=True)
               .agg(mean_slope=("mean_slope", "first"), runs=("run_id", "nunique"),
                    realised_mean=("slope", "mean"), noise=("noise", "first")).reset_index())
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0
