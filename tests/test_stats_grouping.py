"""Default grouping rule, --group-by and --compare parsing."""

from __future__ import annotations

import pytest

from varprinciple.errors import InputError
from varprinciple.stats import group_keys, group_label, parse_compare, parse_group_by
from varprinciple.stats.grouping import unique_labels


def test_explicit_group_wins():
    metas = [{"method": "sgd", "group": "A", "lr": 0.1}, {"method": "dropout", "group": "A"},
             {"method": "sgd", "lr": 0.1}, {"method": "sgd", "lr": 0.2}]
    labels = [group_label(k) for k in group_keys(metas)]
    assert labels == ["A", "A", "sgd lr=0.1", "sgd lr=0.2"]


def test_seed_and_provenance_never_count():
    base = {"method": "sgd", "dataset": "digits", "hyperparameters": {"lr": 0.1, "data_seed": 1}}
    metas = [dict(base, seed=s, run_id=f"r{s}", versions={"torch": str(s)}, truth={"slope": s},
                  config={"seed": s}, package_versions={"x": s}, n_params=s) for s in range(3)]
    metas[2]["hyperparameters"] = {"lr": 0.1, "data_seed": 7}
    keys = group_keys(metas)
    assert keys == [{"method": "sgd"}] * 3


def test_nested_hyperparameters_are_flattened_and_only_varying_fields_shown():
    metas = [{"method": "dropout", "hyperparameters": {"opt": {"lr": 0.1}, "drop_prob": 0.5}, "model": "mlp"},
             {"method": "dropout", "hyperparameters": {"opt": {"lr": 0.1}, "drop_prob": 0.2}, "model": "mlp"}]
    keys = group_keys(metas)
    assert keys == [{"method": "dropout", "drop_prob": 0.5}, {"method": "dropout", "drop_prob": 0.2}]
    assert group_label(keys[1]) == "dropout drop_prob=0.2"


def test_group_by_dotted_keys():
    metas = [{"method": "sgd", "hyperparameters": {"lr": 0.1}}, {"method": "gd"}]
    keys = group_keys(metas, group_by=parse_group_by("hyperparameters.lr"))
    assert keys == [{"hyperparameters.lr": 0.1}, {"hyperparameters.lr": None}]
    assert group_label(keys[0]) == "hyperparameters.lr=0.1"


@pytest.mark.parametrize("bad", ["", "a,,b", "a..b", ","])
def test_group_by_errors(bad):
    with pytest.raises(InputError, match="`group_by` must be run.json keys"):
        parse_group_by(bad)


def test_parse_compare():
    assert parse_compare(["a vs b", "c:sgd vs d:dropout;e vs f"]) == [
        ("a", "b"), ("c:sgd", "d:dropout"), ("e", "f")]
    assert parse_compare(None) is None
    with pytest.raises(InputError, match="`compare` pairs must read 'UNIT_A vs UNIT_B'"):
        parse_compare("a versus b")
    with pytest.raises(InputError, match="`compare` must name at least one pair"):
        parse_compare(" ; ")


def test_group_by_key_absent_from_every_run_is_an_error():
    metas = [{"method": "sgd", "seed": 0}, {"method": "dropout", "seed": 1}]
    with pytest.raises(InputError, match=r"`group_by`: no run's run.json has the key\(s\) 'metod'"):
        group_keys(metas, group_by=["metod"])


def test_distinct_groups_sharing_a_label_are_not_pooled():
    keys = group_keys([{"method": "dropout", "group": "sgd"}, {"method": "sgd"}, {"method": "sgd"}])
    labels = unique_labels(keys)
    assert labels[1] == labels[2] and labels[0] != labels[1]
    assert unique_labels([{"k": 1}, {"k": "1"}])[0] != unique_labels([{"k": 1}, {"k": "1"}])[1]
