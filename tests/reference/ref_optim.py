"""Reference trajectories of torch.optim's optimisers and lr schedulers for tests/test_optim.cpp.

Writes optim.json:
  optimizers: one case per optimiser and option set: the parameter shapes and initial values, the
    gradients fed at every step (generated here; null where a parameter gets no gradient at that
    step), and every parameter's values after each step.
  schedulers: the lr of every param group after construction and after each step (for
    ReduceLROnPlateau: after each step on the given metric sequence).

Options are written as PyTorch takes them: `defaults` are the optimiser's keyword arguments and each
group lists only what it overrides. ATen is pinned to its AVX2 kernels (fused multiply-adds), the
code path of every x86-64 machine this engine targets.
"""
import argparse
import json
import os
import warnings

os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import torch  # noqa: E402

STEPS = 10


def values(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def grad_sequence(gen, shapes, dtype, missing):
    """Gradients per step and parameter; scales vary over the steps so that amsgrad's max differs
    from the running average. `missing` holds (step, param) pairs without a gradient."""
    scales = [1.0, 3.0, 0.5, 2.0, 0.25, 1.5, 0.1, 4.0, 0.75, 1.0]
    grads = []
    for step in range(STEPS):
        row = []
        for i, shape in enumerate(shapes):
            g = torch.randn(shape, generator=gen, dtype=torch.float64) * scales[step]
            row.append(None if (step, i) in missing else g.to(dtype))
        grads.append(row)
    return grads


def run_case(name, optimizer, defaults, groups, shapes, dtype="f32", missing=(), seed=0):
    """groups: list of (param indices, overrides)."""
    torch_dtype = torch.float32 if dtype == "f32" else torch.float64
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(torch_dtype).requires_grad_()
              for s in shapes]
    init = [values(p) for p in params]
    missing = set(missing)
    grads = grad_sequence(gen, shapes, torch_dtype, missing)
    cls = getattr(torch.optim, optimizer)
    torch_groups = [dict(params=[params[i] for i in idx], **over) for idx, over in groups]
    kwargs = dict(defaults)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    for g in torch_groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt = cls(torch_groups, **kwargs)
    trajectory = []
    for step in range(STEPS):
        for p, g in zip(params, grads[step]):
            p.grad = None if g is None else g.clone()
        opt.step()
        trajectory.append([values(p) for p in params])
    return {
        "name": name,
        "optimizer": optimizer,
        "dtype": dtype,
        "defaults": defaults,
        "groups": [{"params": list(idx), "options": over} for idx, over in groups],
        "shapes": [list(s) for s in shapes],
        "init": init,
        "grads": [[None if g is None else values(g) for g in row] for row in grads],
        "params": trajectory,
    }


def optimizer_cases():
    # Shapes: 32 elements (ATen's vector loop only), 15 (its scalar tail only), 37 (both).
    shapes = [(4, 8), (15,), (37,)]
    one = [([0, 1, 2], {})]
    cases = []
    # A parameter that never gets a gradient (index 3) and one that misses steps 0-2 and 6, so its
    # state starts late and its step count lags the others'.
    shapes4 = shapes + [(3, 5)]
    skip = [(s, 3) for s in range(STEPS)] + [(0, 2), (1, 2), (2, 2), (6, 2)]
    two = [([0, 2], {}), ([1, 3], {"lr": 0.03})]

    sgd = [
        ("sgd_plain", {"lr": 0.1}, one, shapes, ()),
        ("sgd_momentum", {"lr": 0.1, "momentum": 0.9}, one, shapes, ()),
        ("sgd_dampening_wd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
         one, shapes, ()),
        ("sgd_nesterov_wd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
         one, shapes, ()),
        ("sgd_maximize", {"lr": 0.1, "momentum": 0.5, "maximize": True}, one, shapes, ()),
        ("sgd_groups_skip", {"lr": 0.1, "momentum": 0.9},
         [([0, 2], {}), ([1, 3], {"lr": 0.01, "momentum": 0.5, "nesterov": True})], shapes4, skip),
    ]
    rmsprop = [
        ("rmsprop_plain", {"lr": 0.01}, one, shapes, ()),
        ("rmsprop_momentum", {"lr": 0.01, "momentum": 0.9}, one, shapes, ()),
        ("rmsprop_centered", {"lr": 0.01, "centered": True, "alpha": 0.9}, one, shapes, ()),
        ("rmsprop_centered_momentum_wd",
         {"lr": 0.005, "centered": True, "momentum": 0.7, "weight_decay": 0.01, "eps": 1e-6},
         one, shapes, ()),
        ("rmsprop_maximize", {"lr": 0.01, "maximize": True}, one, shapes, ()),
        ("rmsprop_groups_skip", {"lr": 0.01},
         [([0, 2], {}), ([1, 3], {"lr": 0.001, "alpha": 0.95, "centered": True})], shapes4, skip),
    ]
    adam = [
        ("adam_plain", {"lr": 0.01}, one, shapes, ()),
        ("adam_wd", {"lr": 0.01, "weight_decay": 0.1, "betas": [0.8, 0.99]}, one, shapes, ()),
        ("adam_amsgrad", {"lr": 0.01, "amsgrad": True}, one, shapes, ()),
        ("adam_maximize_eps", {"lr": 0.02, "maximize": True, "eps": 1e-3}, one, shapes, ()),
        ("adam_groups_skip", {"lr": 0.01},
         [([0, 2], {}), ([1, 3], {"lr": 0.001, "betas": [0.5, 0.9], "amsgrad": True})], shapes4,
         skip),
    ]
    adamw = [
        ("adamw_plain", {"lr": 0.01}, one, shapes, ()),
        ("adamw_wd_amsgrad", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}, one, shapes, ()),
        ("adamw_maximize", {"lr": 0.01, "maximize": True, "betas": [0.7, 0.95]}, one, shapes, ()),
        ("adamw_groups_skip", {"lr": 0.01, "weight_decay": 0.05},
         [([0, 2], {}), ([1, 3], {"lr": 0.003, "weight_decay": 0.0})], shapes4, skip),
    ]
    seed = 0
    for optimizer, table in (("SGD", sgd), ("RMSprop", rmsprop), ("Adam", adam), ("AdamW", adamw)):
        for name, defaults, groups, shp, miss in table:
            seed += 1
            cases.append(run_case(name, optimizer, defaults, groups, shp, missing=miss, seed=seed))
    # Two groups with different lrs, as most fine-tuning runs use (the head at 10x).
    cases.append(run_case("sgd_two_lrs", "SGD", {"lr": 0.01, "momentum": 0.9}, two, shapes4,
                          seed=100))
    # f64 (gradient checks and CPU reference runs use it).
    cases.append(run_case("sgd_nesterov_f64", "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True},
                          one, shapes, dtype="f64", seed=101))
    cases.append(run_case("rmsprop_centered_f64", "RMSprop",
                          {"lr": 0.01, "centered": True, "momentum": 0.5}, one, shapes,
                          dtype="f64", seed=102))
    cases.append(run_case("adam_amsgrad_f64", "Adam", {"lr": 0.01, "amsgrad": True,
                                                       "weight_decay": 0.01},
                          one, shapes, dtype="f64", seed=103))
    cases.append(run_case("adamw_f64", "AdamW", {"lr": 0.01}, one, shapes, dtype="f64", seed=104))
    return cases


# ---- schedulers ----

BASE_LRS = [0.1, 0.025]


def make_optimizer():
    ps = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    return torch.optim.SGD([{"params": [ps[0]], "lr": BASE_LRS[0]},
                            {"params": [ps[1]], "lr": BASE_LRS[1]}], lr=BASE_LRS[0])


def make_scheduler(opt, spec):
    kind, args = spec["kind"], spec.get("args", {})
    S = torch.optim.lr_scheduler
    if kind == "StepLR":
        return S.StepLR(opt, step_size=args["step_size"], gamma=args["gamma"])
    if kind == "PolynomialLR":
        return S.PolynomialLR(opt, total_iters=args["total_iters"], power=args["power"])
    if kind == "CosineAnnealingLR":
        return S.CosineAnnealingLR(opt, T_max=args["T_max"], eta_min=args["eta_min"])
    if kind == "LinearLR":
        return S.LinearLR(opt, start_factor=args["start_factor"], end_factor=args["end_factor"],
                          total_iters=args["total_iters"])
    if kind == "SequentialLR":
        children = [make_scheduler(opt, c) for c in spec["children"]]
        return S.SequentialLR(opt, children, milestones=spec["milestones"])
    raise ValueError(kind)


def lrs(opt):
    return [float(g["lr"]) for g in opt.param_groups]


def scheduler_case(name, spec, steps):
    opt = make_optimizer()
    sched = make_scheduler(opt, spec)
    seq = [lrs(opt)]
    for _ in range(steps):
        opt.step()  # no gradients: nothing moves, but PyTorch sees the intended call order
        sched.step()
        seq.append(lrs(opt))
    out = dict(spec)
    out.update(name=name, base_lrs=BASE_LRS, lrs=seq)
    return out


def plateau_case(name, args, metrics):
    opt = make_optimizer()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **args)
    seq = []
    for m in metrics:
        opt.step()
        sched.step(m)
        seq.append(lrs(opt))
    return {"name": name, "kind": "ReduceLROnPlateau", "args": args, "metrics": metrics,
            "base_lrs": BASE_LRS, "lrs": seq}


def scheduler_cases():
    linear = {"kind": "LinearLR",
              "args": {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 5}}
    cases = [
        scheduler_case("step", {"kind": "StepLR", "args": {"step_size": 3, "gamma": 0.3}}, 20),
        scheduler_case("poly", {"kind": "PolynomialLR", "args": {"total_iters": 30, "power": 0.9}},
                       35),
        scheduler_case("poly_linear", {"kind": "PolynomialLR",
                                       "args": {"total_iters": 7, "power": 1.0}}, 9),
        scheduler_case("cosine", {"kind": "CosineAnnealingLR",
                                  "args": {"T_max": 10, "eta_min": 0.001}}, 45),
        scheduler_case("linear", linear, 8),
        scheduler_case("linear_decay", {"kind": "LinearLR", "args": {
            "start_factor": 1.0, "end_factor": 0.25, "total_iters": 6}}, 8),
        scheduler_case("warmup_poly", {
            "kind": "SequentialLR", "milestones": [5],
            "children": [linear, {"kind": "PolynomialLR",
                                  "args": {"total_iters": 20, "power": 0.9}}]}, 30),
        scheduler_case("warmup_cosine", {
            "kind": "SequentialLR", "milestones": [4],
            "children": [{"kind": "LinearLR", "args": {"start_factor": 0.25, "end_factor": 1.0,
                                                       "total_iters": 4}},
                         {"kind": "CosineAnnealingLR", "args": {"T_max": 12, "eta_min": 0.0}}]},
            20),
        scheduler_case("warmup_step_cosine", {
            "kind": "SequentialLR", "milestones": [3, 9],
            "children": [linear, {"kind": "StepLR", "args": {"step_size": 2, "gamma": 0.5}},
                         {"kind": "CosineAnnealingLR", "args": {"T_max": 5, "eta_min": 0.002}}]},
            20),
    ]
    # Plateau: improvement, flat stretches, a threshold-sized improvement that does not count,
    # cooldown swallowing bad epochs, the min_lr floor and the eps cut-off.
    metrics_min = [1.0, 0.9, 0.85, 0.85, 0.86, 0.8499, 0.87, 0.9, 0.7, 0.71, 0.72, 0.73, 0.74,
                   0.75, 0.76, 0.77, 0.78, 0.79, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86]
    metrics_max = [0.1, 0.2, 0.2, 0.25, 0.249, 0.26, 0.2605, 0.261, 0.3, 0.29, 0.28, 0.27, 0.26,
                   0.25, 0.24, 0.23, 0.22, 0.21, 0.2]
    cases += [
        plateau_case("plateau_min_rel", {"mode": "min", "factor": 0.5, "patience": 2,
                                         "threshold": 0.01, "threshold_mode": "rel"}, metrics_min),
        plateau_case("plateau_min_abs_cooldown",
                     {"mode": "min", "factor": 0.1, "patience": 1, "threshold": 0.005,
                      "threshold_mode": "abs", "cooldown": 2, "min_lr": [0.001, 0.0005]},
                     metrics_min),
        plateau_case("plateau_max_abs", {"mode": "max", "factor": 0.3, "patience": 0,
                                         "threshold": 0.001, "threshold_mode": "abs",
                                         "cooldown": 1, "min_lr": 0.002}, metrics_max),
        plateau_case("plateau_max_rel_eps", {"mode": "max", "factor": 0.5, "patience": 1,
                                             "threshold": 0.05, "threshold_mode": "rel",
                                             "min_lr": 0.022, "eps": 0.004}, metrics_max),
    ]
    return cases


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # SequentialLR switches schedulers with PyTorch's deprecated step(epoch): quiet its warning.
    warnings.filterwarnings("ignore", category=UserWarning)
    out = {"torch_version": torch.__version__, "steps": STEPS,
           "optimizers": optimizer_cases(), "schedulers": scheduler_cases()}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "optim.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path)


if __name__ == "__main__":
    main()
