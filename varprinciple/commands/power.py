"""``varprinciple power``: how many seeds, directions and samples for a target effect (by simulation)."""

from __future__ import annotations

from ..errors import InputError

HELP = "how many runs, directions and samples detect a target effect (simulation)"


def _int_list(option: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"`{option}` takes comma-separated integers; got {text!r}.") from None


def register(subparsers) -> None:
    from ..stats.defaults import ALPHA
    p = subparsers.add_parser(
        "power", help=HELP,
        description=HELP + ". Simulates studies in memory over a grid of designs, analyses each as "
        "`varprinciple test` would, and reports the power with its Monte Carlo SE and the smallest "
        "design reaching the target power.")
    p.add_argument("--effect", type=float, required=True,
                   help="kind slope: the group's mean exponent b; kind difference: the difference in b")
    p.add_argument("--kind", choices=["slope", "difference"], default="slope",
                   help="slope: one-sided group test of b > 0; difference: two-sided comparison of two "
                        "groups (default slope)")
    p.add_argument("--baseline", type=float, default=1.0,
                   help="kind difference: mean exponent of the second group (default 1.0)")
    p.add_argument("--runs", default="3,5,8", help="runs (seeds) per group to try (default 3,5,8)")
    p.add_argument("--directions", default="10,20", help="Hessian directions to try (default 10,20)")
    p.add_argument("--samples", default="100,400", help="noise samples per probe to try (default 100,400)")
    p.add_argument("--target-power", type=float, default=0.8, help="power to reach (default 0.8)")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"level of the tests (default {ALPHA})")
    p.add_argument("--replicates", type=int, default=200,
                   help="simulated studies per design (default 200; MC SE <= 0.035)")
    g = p.add_argument_group("noise model (see varprinciple simulate)")
    g.add_argument("--slope-sd", type=float, default=0.1, help="run-to-run SD of b (default 0.1)")
    g.add_argument("--scatter", type=float, default=0.2, help="direction scatter SD, log units (default 0.2)")
    g.add_argument("--intercept", type=float, default=-3.5, help="a in log var = a + b log lambda (default -3.5)")
    g.add_argument("--noise", default="gaussian", help="gaussian, student-t or masked (default gaussian)")
    g.add_argument("--df", type=float, default=8.0, help="student-t degrees of freedom, >= 5 (default 8)")
    g.add_argument("--drop-prob", type=float, default=0.5, help="masked noise DROP probability (default 0.5)")
    g.add_argument("--correlation", type=float, default=0.3, help="projection correlation in [0, 1) (default 0.3)")
    g.add_argument("--nonpositive", type=int, default=0, help="eigenvalues <= 0 per probe (default 0)")
    g.add_argument("--eigen-decay", type=float, default=1.0, help="lambda_i ~ (i+1)^-decay (default 1)")
    g.add_argument("--lambda-max", type=float, default=10.0, help="typical top eigenvalue (default 10)")
    p.add_argument("--resamples", type=int, default=0,
                   help="resamples passed to the analysis (the counted tests do not resample; default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    p.set_defaults(func=handler)


def handler(args) -> int:
    import numpy as np

    from ..io import write_json
    from ..stats.power import power_analysis

    res = power_analysis(
        effect=args.effect, kind=args.kind, baseline=args.baseline, n_runs=_int_list("--runs", args.runs),
        n_directions=_int_list("--directions", args.directions), n_samples=_int_list("--samples", args.samples),
        target_power=args.target_power, alpha=args.alpha, replicates=args.replicates, slope_sd=args.slope_sd,
        scatter=args.scatter, intercept=args.intercept, noise=args.noise, df=args.df, drop_prob=args.drop_prob,
        correlation=args.correlation, n_nonpositive=args.nonpositive, eigen_decay=args.eigen_decay,
        lambda_max=args.lambda_max, resamples=args.resamples, rng=np.random.default_rng(args.seed))
    print(res.summary())
    if args.json:
        write_json(args.json, res.to_dict())
        print(f"wrote {args.json}")
    return 0
