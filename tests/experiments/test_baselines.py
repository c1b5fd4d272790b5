import numpy as np
import pytest
import torch

from experiments.baselines import (
    LENGTHSCALE_FLOOR,
    FreezeThawGPTuner,
    HyperbandTuner,
    TransferTopKTuner,
)
from experiments.reproduce import METHODS

FAST = {"at2": {"engine_options": {"fit_steps": 20, "refit_steps": 1}},
        "mtgp": {"refit_every": 5, "fit_iterations": 20},
        "freeze_thaw_gp": {"refit_every": 5, "fit_iterations": 20},
        "lkgp": {"refit_every": 10, "fit_iterations": 10, "samples": 8}}


def run(db, method, seed, budget, **kwargs):
    pair = db.pair(0)
    tuner = METHODS[method](db, pair.sources, pair.target, seed=seed, **FAST.get(method, {}),
                            **kwargs)
    return tuner, tuner.tune(budget, progress=False)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_contract_new_cells_in_order_within_budget_and_deterministic(tiny_db, method):
    budget = 12
    tuner, result = run(tiny_db, method, seed=4, budget=budget)
    cells = [(r.config_id, r.epoch) for r in result.records]
    assert len(cells) == budget and len(set(cells)) == budget  # the budget, never a cell twice
    seen: dict[int, int] = {}
    for config, epoch in cells:
        assert epoch == seen.get(config, 0) + 1  # each configuration's epochs in order
        seen[config] = epoch
    assert int(tuner.observed.sum()) == budget
    assert all(0 <= r.recommended_rank < len(tiny_db.configs) for r in result.records)
    _, again = run(tiny_db, method, seed=4, budget=budget)
    assert again.series("config_id") == result.series("config_id")
    assert again.series("recommended") == result.series("recommended")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_minimised_metric_is_tuned_the_other_way_round(tiny_db, method):
    """val_loss = -val_acc: the same queries, recommendations, ranks and regrets, with the loss
    recorded in its own units (a query's ucb and mean too)."""
    with tiny_db.edit() as w:
        w.write_curves("val_loss", -tiny_db.curves(), tasks=list(tiny_db.tasks),
                       profiles=range(2))
    acc, loss = (run(tiny_db, method, 2, 12, metric=m)[1] for m in ("val_acc", "val_loss"))
    for name in ("config_id", "epoch", "recommended", "recommended_rank", "regret"):
        assert loss.series(name) == acc.series(name), name
    # regret is measured towards the lowest loss: zero exactly when the best is recommended
    regret, rank = loss.series("regret"), loss.series("recommended_rank")
    assert [r > 0 for r in regret] == [k > 0 for k in rank]
    for name in ("value", "ucb", "mean"):
        np.testing.assert_allclose(loss.series(name), -np.array(acc.series(name)), rtol=1e-6)


@pytest.mark.parametrize("method", ["random", "random_full", "hyperband"])
def test_random_methods_depend_on_the_seed(tiny_db, method):
    runs = {tuple(run(tiny_db, method, seed, 10)[1].series("config_id")) for seed in range(6)}
    assert len(runs) > 1


def test_every_method_stops_when_the_target_is_fully_trained(tiny_db):
    cells = len(tiny_db.configs) * tiny_db.epochs
    for method in ("random", "random_full", "hyperband", "transfer_topk"):
        tuner, result = run(tiny_db, method, 0, cells)
        assert bool(tuner.observed.all())
        with pytest.raises(ValueError, match="fully trained"):
            tuner.ask()


def test_random_full_and_transfer_topk_train_configurations_to_the_end(tiny_db):
    E = tiny_db.epochs
    for method in ("random_full", "transfer_topk"):
        configs = run(tiny_db, method, 1, 2 * E + 1)[1].series("config_id")
        assert len(set(configs[:E])) == 1 and len(set(configs[E:2 * E])) == 1
        assert configs[0] != configs[E] != configs[2 * E]


def test_transfer_topk_follows_the_mean_source_rank(tiny_db):
    pair = tiny_db.pair(0)
    tuner = TransferTopKTuner(tiny_db, pair.sources, pair.target)
    mean_rank = sum(tiny_db.ranking(s) for s in pair.sources) / len(pair.sources)
    order = tuner.order()
    assert list(mean_rank[order]) == sorted(mean_rank)


def test_hyperband_successive_halving(tiny_db):
    pair = tiny_db.pair(0)
    # 6 configurations x 5 epochs, eta 2: s_max = 2; bracket 2 starts 4 configurations at
    # round(5/4) = 1 epoch, keeps 2 for 2 epochs (round(5/2) = 2), then 1 for 5 epochs.
    tuner = HyperbandTuner(tiny_db, pair.sources, pair.target, eta=2, seed=0)
    result = tuner.tune(4 + 2 * 1 + 3, progress=False)
    configs, epochs = result.series("config_id"), result.series("epoch")
    first = configs[:4]
    assert len(set(first)) == 4 and epochs[:4] == [1, 1, 1, 1]
    kept = configs[4:6]
    assert epochs[4:6] == [2, 2] and set(kept) <= set(first) and len(set(kept)) == 2
    values = dict(zip(configs[:4], result.series("value")[:4], strict=True))
    assert min(values[c] for c in kept) >= max(v for c, v in values.items() if c not in kept)
    assert len(set(configs[6:9])) == 1 and epochs[6:9] == [3, 4, 5]
    for eta in (1, "3", 2.5):
        with pytest.raises(ValueError, match=f"option eta={eta!r}: expected an integer in"):
            HyperbandTuner(tiny_db, pair.sources, pair.target, eta=eta)


def test_a_failed_gp_fit_keeps_the_previous_hyperparameters(tiny_db, monkeypatch, caplog):
    from botorch.exceptions import ModelFittingError

    from experiments import baselines

    def failing_fit(mll, **kwargs):
        for p in mll.parameters():
            p.data.fill_(float("nan"))  # what a diverged attempt may leave behind
        raise ModelFittingError("All attempts to fit the model have failed.")

    monkeypatch.setattr(baselines, "fit_gpytorch_mll", failing_fit)
    tuner, result = run(tiny_db, "freeze_thaw_gp", seed=0, budget=6)
    assert len(result.records) == 6 and "fit failed" in caplog.text
    mean, var = tuner.posterior()
    assert bool(mean.isfinite().all() and var.isfinite().all())


def test_freeze_thaw_gp_covariance_stays_psd_at_its_smallest_lengthscales(tiny_db):
    pair = tiny_db.pair(0)
    tuner = FreezeThawGPTuner(tiny_db, pair.sources, pair.target, seed=0)
    tuner.tune(8, progress=False)
    model = tuner.model
    for kernel in model.covar_module.modules():
        if hasattr(kernel, "raw_lengthscale"):
            kernel.raw_lengthscale.data.fill_(-50.0)  # as far down as an optimiser may push it
            assert torch.allclose(kernel.lengthscale, torch.tensor(LENGTHSCALE_FLOOR).to(
                kernel.lengthscale), rtol=1e-6)
    X = model.train_inputs[0]
    with torch.no_grad():
        assert torch.linalg.eigvalsh(model.covar_module(X).to_dense()).min() > -1e-10
