import math

import gpytorch
import numpy as np
import pytest
import torch
from gpytorch.variational import VariationalStrategy

from at2 import variational
from at2.exact import ExactEngine
from at2.model import AT2Surrogate, CurveGrid
from at2.tuner import AT2Tuner
from at2.variational import VariationalEngine, warmup_linear
from hyperrec.spaces import hyperrec_space


def small_grid(T=4, C=6, E=5, seed=1) -> CurveGrid:
    """Random curves: complete sources, a target observed on a few cells in no special order."""
    space = hyperrec_space()
    torch.manual_seed(seed)
    values = torch.rand(T, C, E, dtype=torch.float64)
    values[-1] = float("nan")
    values[-1, 0, :3] = torch.rand(3, dtype=torch.float64)
    values[-1, 2, 0] = 0.3
    values[-1, 5, :] = torch.rand(E, dtype=torch.float64)
    encodings = torch.as_tensor(space.encode(space.sample(C, seed=seed)))
    return CurveGrid(values, encodings, [f"t{i}" for i in range(T)], list(range(C)))


def model_for(grid: CurveGrid, offset: float = 0.0) -> AT2Surrogate:
    torch.manual_seed(0)
    model = AT2Surrogate(hyperrec_space(), grid.shape[0], offset=offset)
    model.initialize_from(grid)
    model.likelihood.noise = torch.tensor([1e-3, 2e-3, 5e-4, 3e-3], dtype=torch.float64)
    return model


def all_rows(grid: CurveGrid) -> torch.Tensor:
    """Model input rows of every cell, task-major (the order of the Kronecker product)."""
    T, C, E = grid.shape
    return torch.cat([grid.inputs(task, torch.arange(C).repeat_interleave(E),
                                  torch.arange(E).repeat(C)) for task in range(T)])


def dense_covariance(model: AT2Surrogate, grid: CurveGrid) -> torch.Tensor:
    """The prior covariance of every cell: the Kronecker product plus the target's offsets."""
    t = grid.t.unsqueeze(-1)
    K_T = model.task_kernel.matrix()
    rows = all_rows(grid)
    return (torch.kron(torch.kron(K_T, model.config_kernel.forward(grid.encodings, grid.encodings)),
                       model.epoch_kernel.forward(t, t))
            + model.offset_kernel.forward(rows, rows, task_matrix=K_T))


def dense_reference(model: AT2Surrogate, grid: CurveGrid):
    """The same GP by brute force: the full covariance restricted to observed cells."""
    T, C, E = grid.shape
    with torch.no_grad():
        K = dense_covariance(model, grid)
        obs = grid.observed.flatten()
        mu = model.mean.constants.repeat_interleave(C * E)
        noise = model.likelihood.noise.repeat_interleave(C * E)
        L = torch.linalg.cholesky(K[obs][:, obs] + torch.diag(noise[obs]))
        r = grid.values.flatten()[obs] - mu[obs]
        alpha = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
        mll = -0.5 * (r @ alpha + 2 * torch.log(torch.diagonal(L)).sum()
                      + len(r) * math.log(2 * math.pi)) / len(r)
        target = torch.zeros(T, C, E, dtype=torch.bool)
        target[-1] = True
        Ks = K[target.flatten()][:, obs]
        mean = mu[target.flatten()] + Ks @ alpha
        v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
        var = torch.diagonal(K[target.flatten()][:, target.flatten()]) - (v**2).sum(0)
    return mll, mean.view(C, E), var.view(C, E), (K, obs, L, alpha, mu)


def one_epoch_each(grid: CurveGrid) -> CurveGrid:
    """The target observed on the first epoch of every configuration (m = p = C)."""
    values = grid.values.clone()
    values[-1] = float("nan")
    values[-1, :, 0] = torch.linspace(0.2, 0.7, values.shape[1], dtype=values.dtype)
    return CurveGrid(values, grid.encodings, grid.tasks, grid.config_ids)


@pytest.mark.parametrize("offset", [0.0, 0.3])
@pytest.mark.parametrize("cells", ["some configurations", "one epoch each"])
def test_exact_engine_equals_the_dense_gp(cells, offset):
    grid = small_grid() if cells == "some configurations" else one_epoch_each(small_grid())
    model = model_for(grid, offset)
    engine = ExactEngine(model, grid)
    model.task_kernel.update(grid.values, grid.observed)
    mll, mean, var, _ = dense_reference(model, grid)
    with torch.no_grad():
        torch.testing.assert_close(engine._solve().mll(), mll)
    m, v = engine.posterior_grid()
    torch.testing.assert_close(m, mean)
    torch.testing.assert_close(v, var)


def test_offset_adds_its_variance_to_every_target_cell_a_priori():
    grid = small_grid()
    grid.values[-1] = float("nan")
    variances = []
    for offset in (0.0, 0.2):
        model = model_for(grid, offset)
        model.task_kernel.update(grid.values, grid.observed)
        variances.append(ExactEngine(model, grid).posterior_grid()[1])
    k_tt = model.task_kernel.matrix()[-1, -1].detach()
    torch.testing.assert_close(variances[1] - variances[0], torch.full_like(variances[0],
                                                                            0.2 * k_tt))


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_exact_likelihood_gradients_equal_the_dense_ones(offset):
    grid = small_grid()
    model = model_for(grid, offset)
    engine = ExactEngine(model, grid)
    model.task_kernel.update(grid.values, grid.observed)
    params = [p for p in model.parameters() if p.requires_grad]
    fast = torch.autograd.grad(engine._solve().mll(), params, allow_unused=True)
    T, C, E = grid.shape
    K = dense_covariance(model, grid)
    obs = grid.observed.flatten()
    mu = model.mean.constants.repeat_interleave(C * E)[obs]
    cov = K[obs][:, obs] + torch.diag(model.likelihood.noise.repeat_interleave(C * E)[obs])
    dense = torch.distributions.MultivariateNormal(mu, cov).log_prob(grid.values.flatten()[obs])
    slow = torch.autograd.grad(dense / obs.sum(), params, allow_unused=True)
    for a, b in zip(fast, slow):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_exact_pointwise_posterior_equals_the_dense_gp_anywhere(offset):
    grid = small_grid()
    model = model_for(grid, offset)
    engine = ExactEngine(model, grid)
    model.task_kernel.update(grid.values, grid.observed)
    _, _, _, (K, obs, L, alpha, mu) = dense_reference(model, grid)
    space = hyperrec_space()
    new = torch.as_tensor(space.encode(space.sample(3, seed=7)))
    X = torch.stack([torch.cat([torch.tensor([float(task)], dtype=torch.float64), new[c],
                                torch.tensor([t], dtype=torch.float64)])
                     for task, c, t in [(3, 0, 0.5), (3, 1, 0.93), (1, 2, 0.3), (0, 0, 1.0)]])
    X = torch.cat([X, grid.inputs(3, torch.tensor([0, 5]), torch.tensor([4, 1]))])  # observed ones
    rows = all_rows(grid)
    with torch.no_grad():
        K_T = model.task_kernel.matrix()
        def k(a, b):
            return (model.covar_module.forward(a, b)
                    + model.offset_kernel.forward(a, b, task_matrix=K_T))
        cross = k(X, rows)[:, obs]
        mean = model.mean.constants[X[:, 0].long()] + cross @ alpha
        v = torch.linalg.solve_triangular(L, cross.T, upper=False)
        cov = k(X, X) - v.T @ v
    post = engine.predict(X)
    torch.testing.assert_close(post.mean.detach(), mean)
    torch.testing.assert_close(post.covariance_matrix.detach(), cov)
    batched = engine.predict(X.reshape(3, 2, -1))
    assert batched.mean.shape == (3, 2) and batched.covariance_matrix.shape == (3, 2, 2)


def test_product_kernel_on_grid_equals_it_on_rows():
    """Covariances to grid cells from per-factor tables, and with the shared terms computed
    once: same values and gradients as on rows."""
    grid = small_grid()
    model = model_for(grid)
    cells = torch.nonzero(grid.observed, as_tuple=True)
    rows = grid.inputs(*cells)
    x1 = rows[::7].clone()
    x1[:, -1] += 0.03  # inducing-like rows off the grid's epochs
    x1.requires_grad_()
    weights = torch.randn(len(x1), len(rows), dtype=torch.float64)
    results = []
    kernel = model.covar_module
    for covariance in (lambda: kernel.forward(x1, rows),
                       lambda: kernel.on_grid(x1, grid, *cells),
                       lambda: kernel.forward(x1, rows, **kernel.shared_terms(x1)),
                       lambda: kernel.on_grid(x1, grid, *cells, **kernel.shared_terms(x1))):
        model.zero_grad()
        x1.grad = None
        k = covariance()
        (weights * k).sum().backward()
        results.append((k.detach(), x1.grad[:, -1].clone(),
                        [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (k_rows, dt_rows, grads_rows), *others = results
    assert len(grads_rows) > 5
    for k, dt, grads in others:
        torch.testing.assert_close(k, k_rows)
        torch.testing.assert_close(dt, dt_rows)
        assert len(grads) == len(grads_rows)
        for a, b in zip(grads, grads_rows):
            torch.testing.assert_close(a, b)


def test_exact_engine_refuses_sources_with_gaps():
    grid = small_grid()
    grid.values[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"complete source curves; missing cells: \{'t1': 1\}"):
        ExactEngine(model_for(grid), grid)


@pytest.mark.parametrize("engine_class, options", [
    (ExactEngine, {"fit_steps": 150}),
    (VariationalEngine, {"epochs": 200, "inducing": 64, "batch_size": 64, "lr": 0.05}),
])
def test_fit_predicts_a_related_target_better_than_a_constant(tiny_db, engine_class, options):
    """Target curves are observed for half the configurations; the rest are predicted."""
    names = tiny_db.tasks
    grid = CurveGrid.from_database(tiny_db, names[1:], names[0])
    truth = torch.as_tensor(tiny_db.curves(tasks=[names[0]], profile=0)[0])
    grid.values[-1, ::2] = truth[::2]
    if engine_class is VariationalEngine:
        grid = CurveGrid(grid.values.float(), grid.encodings.float(), grid.tasks, grid.config_ids)
    torch.manual_seed(0)
    model = AT2Surrogate(tiny_db.space, len(names))
    model.initialize_from(grid)
    engine = engine_class(model, grid, **options)
    history = engine.fit()
    assert history[-1] > history[0]
    mean, var = engine.posterior_grid()
    assert mean.shape == var.shape == truth.shape and (var > 0).all()
    held_out = truth[1::2].to(mean)
    constant = truth[::2].mean().to(mean)
    model_error = (mean[1::2] - held_out).pow(2).mean().sqrt()
    constant_error = (constant - held_out).pow(2).mean().sqrt()
    assert model_error < 0.5 * constant_error


@pytest.mark.parametrize("engine_class, options", [
    (ExactEngine, {"fit_steps": 3}),
    (VariationalEngine, {"epochs": 3, "inducing": 16, "batch_size": 16}),
])
def test_fit_shows_a_progress_bar_when_asked(tiny_db, capsys, engine_class, options):
    names = tiny_db.tasks
    dtype = torch.float32 if engine_class is VariationalEngine else torch.float64
    grid = CurveGrid.from_database(tiny_db, names[1:], names[0], dtype=dtype)
    model = AT2Surrogate(tiny_db.space, len(names))
    model.initialize_from(grid)
    engine = engine_class(model, grid, **options)
    engine.fit()
    assert capsys.readouterr().err == ""
    engine.fit(progress=True)
    assert f"{engine.name} fit" in capsys.readouterr().err


def test_variational_keeps_index_columns_and_positive_epochs(tiny_db):
    names = tiny_db.tasks
    grid = CurveGrid.from_database(tiny_db, names[1:], names[0], dtype=torch.float32)
    model = AT2Surrogate(tiny_db.space, len(names))
    model.initialize_from(grid)
    engine = VariationalEngine(model, grid, epochs=3, inducing=32, batch_size=16, lr=0.5)
    inducing = engine.gp.variational_strategy.inducing_points
    before = inducing.detach().clone()
    engine.fit()
    n_index = 1 + len(tiny_db.space.categorical)
    torch.testing.assert_close(inducing[:, :n_index], before[:, :n_index])
    assert not torch.equal(inducing[:, n_index:], before[:, n_index:])
    assert (inducing[:, -1] > 0).all()
    X = grid.inputs(2, torch.tensor([0, 1, 2]), torch.tensor([0, 4, 2])).unsqueeze(0)
    assert engine.predict(X).covariance_matrix.shape == (1, 3, 3)


def test_variational_inducing_points_cover_the_target(tiny_db):
    """Inducing points come from every grid cell, not only the observed (source) ones: with their
    task column fixed, a target without any would have no component of its own in q(f)."""
    names = tiny_db.tasks
    grid = CurveGrid.from_database(tiny_db, names[1:], names[0], dtype=torch.float32)
    model = AT2Surrogate(tiny_db.space, len(names))
    model.initialize_from(grid)
    engine = VariationalEngine(model, grid, inducing=32, batch_size=16)
    tasks = engine.gp.variational_strategy.inducing_points[:, 0]
    assert set(tasks.long().tolist()) == set(range(len(names)))
    assert not grid.observed[-1].any()


@pytest.mark.parametrize("fast", [False, True])
def test_variational_mixed_precision_follows_the_hardware(tiny_db, monkeypatch, fast):
    """By default bfloat16 products are used only where the device has fast ones (emulated, they
    made a step dozens of times slower); the choice is recorded with the tuner's settings."""
    monkeypatch.setattr(variational, "fast_bfloat16", lambda device: fast)
    names = tiny_db.tasks
    tuner = AT2Tuner(tiny_db, names[1:], names[0], engine="variational",
                     engine_options={"epochs": 1, "inducing": 8, "batch_size": 16})
    strategy = tuner.engine.gp.variational_strategy
    assert strategy.product_dtype == (torch.bfloat16 if fast else None)
    assert tuner.settings()["engine_options"]["mixed_precision"] is fast
    forced = AT2Tuner(tiny_db, names[1:], names[0], engine="variational",
                      engine_options={"epochs": 1, "inducing": 8, "mixed_precision": not fast})
    assert (forced.engine.gp.variational_strategy.product_dtype is None) is fast


def _variational(db, shift: float = 0.0, **options) -> VariationalEngine:
    names = db.tasks
    grid = CurveGrid.from_database(db, names[1:], names[0], dtype=torch.float32)
    grid.values += shift
    torch.manual_seed(0)
    model = AT2Surrogate(db.space, len(names))
    model.initialize_from(grid)
    return VariationalEngine(model, grid, inducing=16, batch_size=16, **options)


def _fitted_variational(db, shift: float = 0.0, **options) -> VariationalEngine:
    engine = _variational(db, shift, **options)
    engine.fit()
    return engine


def test_variational_target_noise_starts_as_a_typical_source(tiny_db):
    """The target's noise gets no gradient in the offline fit (no target cells) and SGD barely
    moves it later: it must not stay at the data's variance, where its observations look like
    noise, but start at the geometric mean of the sources' fitted noise variances."""
    engine = _variational(tiny_db, epochs=30, lr=0.1)
    start = engine.model.likelihood.noise.detach().clone()
    engine.fit()
    noise = engine.model.likelihood.noise.detach()
    torch.testing.assert_close(noise[-1], noise[:-1].log().mean().exp())
    assert noise[-1] < 0.9 * start[-1]


def test_variational_answers_in_the_data_units(tiny_db):
    """It trains on standardised values; its posterior, predictions and noise are in data units,
    so shifting every value shifts the posterior mean and leaves the variances alone."""
    engines = [_fitted_variational(tiny_db, shift, epochs=2) for shift in (0.0, 10.0)]
    (mean, var), (mean10, var10) = (e.posterior_grid() for e in engines)
    torch.testing.assert_close(mean10, mean + 10, rtol=0, atol=1e-4)
    torch.testing.assert_close(var10, var, rtol=1e-3, atol=1e-7)
    X = engines[0].grid.inputs(2, torch.tensor([0, 3]), torch.tensor([4, 1]))
    predicted = engines[0].predict(X)
    torch.testing.assert_close(predicted.mean, mean[[0, 3], [4, 1]])
    tasks = torch.arange(3)
    model = engines[0].model
    torch.testing.assert_close(engines[0].noise(tasks),
                               model.likelihood.noise * engines[0].scale**2)


def test_variational_refit_is_stable_once_the_noise_is_small(tiny_db):
    """A refit starts again at the full learning rate. In the data's units SGD on a task's
    constant mean is unstable once its noise variance is small (lr * share / noise > 2 (1 +
    momentum)); on HyperRec pair 0 that drove source means to -14 and -25 in the first refit.
    Standardised, the same state refits calmly."""
    engine = _fitted_variational(tiny_db, epochs=5, refit_epochs=3)
    model = engine.model
    with torch.no_grad():  # the sources' noise at the end of a long fit: 1e-3 in data units
        model.likelihood.noise = torch.full((3,), 1e-3) / engine.scale**2
    engine.update()
    means = engine.shift + engine.scale * model.mean.constants
    values = engine.grid.values[engine.grid.observed]
    assert ((means >= values.min()) & (means <= values.max())).all(), means
    assert (engine.noise(torch.arange(3)) < 0.1).all()


def test_warmup_then_linear_decay():
    factor = warmup_linear(total_steps=200, warmup_ratio=0.01)
    values = np.array([factor(s) for s in range(200)])
    assert values[0] == 0.5 and values[1] == 1.0  # 2 warm-up steps
    assert values[2] == 1.0 and (np.diff(values[2:]) < 0).all()
    assert values[-1] == pytest.approx(1 / 198)


def test_variational_training_path_matches_gpytorch(tiny_db):
    """The lean training forward and closed-form KL equal gpytorch's generic whitened strategy;
    with mixed precision (bfloat16 products) the variances stay within bfloat16's rounding."""
    names = tiny_db.tasks
    grid = CurveGrid.from_database(tiny_db, names[1:], names[0])
    model = AT2Surrogate(tiny_db.space, len(names))
    model.initialize_from(grid)
    engine = VariationalEngine(model, grid, epochs=2, inducing=24, batch_size=16, lr=0.1,
                               mixed_precision=False)
    engine.fit()  # moves q(u) and the inducing points away from their initial values
    strategy = engine.gp.variational_strategy
    X, _, cells = engine._data()
    strategy.train()
    generic = VariationalStrategy.__call__(strategy, X[:40])
    for lean in strategy(X[:40]), strategy(X[:40], cells=cells[:, :40].unbind()):
        torch.testing.assert_close(lean.mean, generic.mean)
        torch.testing.assert_close(lean.variance, generic.variance)
    parameters = [p for p in engine.gp.parameters() if p.requires_grad]
    gradients = []  # and so are the gradients (custom whitening backward, L_S's gradient hook)
    for f in strategy(X[:40]), VariationalStrategy.__call__(strategy, X[:40]):
        objective = (f.mean * torch.linspace(-1, 1, 40)).sum() + f.variance.sum()
        objective = objective + strategy.kl_divergence()
        gradients.append(torch.autograd.grad(objective, parameters, allow_unused=True))
    for lean, generic in zip(*gradients, strict=True):
        if generic is not None:
            torch.testing.assert_close(lean, generic, rtol=1e-4, atol=1e-5)
    assert torch.equal(strategy._variational_distribution.chol_variational_covar.triu(1),
                       torch.zeros(24, 24))  # still lower triangular after the fit
    engine.gp.eval()  # the grid's marginals take the lean path; predict is gpytorch's own
    mean, variance = engine.posterior_grid()
    C, E = grid.shape[1:]
    generic = engine.predict(grid.inputs(grid.target, torch.arange(C).repeat_interleave(E),
                                         torch.arange(E).repeat(C)))
    torch.testing.assert_close(mean.flatten(), generic.mean)
    torch.testing.assert_close(variance.flatten(), generic.variance)
    strategy.train()
    generic = VariationalStrategy.__call__(strategy, X[:40])
    strategy.product_dtype = torch.bfloat16
    mixed = strategy(X[:40])
    torch.testing.assert_close(mixed.mean, generic.mean)
    torch.testing.assert_close(mixed.variance, generic.variance, rtol=2e-2,
                               atol=1e-2 * generic.variance.max().item())
    q = strategy.variational_distribution
    with gpytorch.settings.max_preconditioner_size(0):
        expected = torch.distributions.kl.kl_divergence(q, strategy.prior_distribution)
    torch.testing.assert_close(strategy.kl_divergence(), expected)
