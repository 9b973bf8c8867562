"""The gap report: how far the ELBO is from log p(x), why, and what each inference path costs.

For a trained model and a set of examples, following Cremer, Li & Duvenaud (2018):

    log p(x) - ELBO[q]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q])
       total gap            approximation gap          amortization gap

q is the encoder's amortized posterior, q* the best member of a family fitted to each
example separately (`optimize_posterior`). log p(x) is estimated by importance sampling
(the IWAE bound, a lower bound in expectation that tightens with k and with the proposal)
with the encoder as proposal (k samples) and with each fitted q* (eval_k samples); the
proposal whose estimate is highest on average is the reference, as in Cremer et al.,
since a poor proposal makes the bound loose and would make the approximation gap look
smaller than it is. (Taking the per-example maximum instead would add an upward bias from
the estimates' noise.) The encoder-only estimate is reported too. Alongside: semi-amortized
refinement of q, the point estimates ML and MAP (what optimising z alone gives), active
units, and the wall time per example of each path (one encoder pass, per-example
optimisation, importance sampling).

`gap_report` returns a JSON-ready dict; `format_gap_table` renders it for a terminal and
`plot_gaps` draws the decomposition and the optimisation traces.
"""
from __future__ import annotations

import glob
import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from tfvae.distributions import moments
from tfvae.inference.families import get_family
from tfvae.inference.evaluate import mean_and_se
from tfvae.inference.importance import importance_sampling
from tfvae.inference.optimize import check_euclidean_latent, optimize_posterior
from tfvae.inference.points import laplace_log_likelihood, point_estimate
from tfvae.inference.units import active_units
from tfvae.inputs import check_batch, check_condition, check_count
from tfvae.io import atomic_write_text, replace_marked_block
from tfvae.parts.refine import refine_posterior

IS_BATCH = 100          # examples per importance-sampling call


def _stat(values) -> dict:
    """{"mean", "se"} over the finite values (a Laplace estimate can be NaN)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"mean": math.nan, "se": math.nan}
    mean, se = mean_and_se(values)
    return {"mean": mean, "se": se}


def _slices(n, size):
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _part(condition, part):
    return None if condition is None else condition[part]


def _importance(model, x, condition, k, seed, proposals=None):
    """Per-example arrays of `importance_sampling` over x in batches of IS_BATCH, and the
    seconds it took (after a warm-up call that traces the graph)."""
    parts = _slices(int(x.shape[0]), IS_BATCH)
    proposal = (lambda i: None) if proposals is None else proposals
    importance_sampling(model, x[parts[0]], k=k, condition=_part(condition, parts[0]), seed=[seed, 0],
                        proposal=proposal(0))
    start = time.perf_counter()
    outs = [importance_sampling(model, x[part], k=k, condition=_part(condition, part), seed=[seed, i],
                                proposal=proposal(i)) for i, part in enumerate(parts)]
    seconds = time.perf_counter() - start
    return {key: np.concatenate([o[key].numpy() for o in outs]) for key in outs[0]}, seconds


def _path_row(terms: dict, seconds: float, n: int, **extra) -> dict:
    row = {key: _stat(terms[key]) for key in ("elbo", "log_px_z", "kl")}
    row["iwae"] = _stat(terms["log_px"])
    row["seconds_per_example"] = seconds / n
    row.update(extra)
    return row


def _mean_trace(traces: list[np.ndarray]) -> list[float]:
    """Mean over examples of per-step objectives, from chunks that may have run different
    numbers of steps (a finished chunk holds its last value)."""
    longest = max(len(t) for t in traces)
    padded = [np.concatenate([t, np.repeat(t[-1:], longest - len(t), axis=0)]) for t in traces]
    return np.concatenate(padded, axis=1).mean(axis=1).tolist()


# The semi-amortized path of a model that does not refine its posterior itself.
REFINE_STEPS, REFINE_LEARNING_RATE, REFINE_MAX_GRAD_NORM = 20, 0.02, 5.0


def _refinement_settings(model, steps, learning_rate):
    """(steps, learning rate, max gradient norm, draws per step) of the semi-amortized path:
    those given, else the model's own refinement (an SA-VAE's refine_steps,
    refine_learning_rate, max_grad_norm and refine_samples), else the defaults above."""
    if not hasattr(model, "refine_steps"):
        return (REFINE_STEPS if steps is None else steps,
                REFINE_LEARNING_RATE if learning_rate is None else learning_rate, REFINE_MAX_GRAD_NORM, 1)
    return (model.refine_steps if steps is None else steps,
            model.refine_learning_rate if learning_rate is None else learning_rate,
            model.max_grad_norm, model.refine_samples)


def gap_report(model, x, condition=None, families=("diag", "full", "flow"), k: int = 5000,
               eval_k: int = 1000, steps: int = 2000, learning_rate: float = 0.05, samples: int = 8,
               refine_steps: int | None = None, refine_learning_rate: float | None = None, points: bool = True,
               batch_size: int = 1000, seed: int = 0, verbose: bool = True, out_path: str | None = None) -> dict:
    """Decomposes the inference gap of `model` on the examples x (see the module docstring).

    Args:
      model: a model on the tfvae contract; x: [N, *data_shape]; condition: [N, C] if needed.
      families: posterior families to fit per example ("diag", "full", "flow").
      k: importance samples for log p(x) (encoder as proposal).
      eval_k: samples to evaluate each fitted q* (its ELBO, and the IWAE bound with q* as
        proposal).
      steps, learning_rate, samples: budget, Adam step size and draws per step of the
        per-example optimisation (tolerance stopping as in `optimize_posterior`).
      refine_steps, refine_learning_rate: semi-amortized refinement of the encoder (steps 0:
        skip). None takes a model's own when it trains through a refinement (SA-VAE: its K, step
        size and gradient clipping, the q it was trained to make), else 20 steps at 0.02.
      points: also find the ML and MAP latents.
      batch_size: examples optimised together (memory).
      seed: the same seed gives the same report.
      verbose: print progress.
      out_path: also write the report there as JSON (atomically). While it is being made,
        what is done so far is written after each step to the same name with ".partial"
        before its extension (removed at the end): a crash keeps the numbers measured.
    Returns:
      a JSON-ready dict; every statistic is {"mean", "se"} over the examples.
    """
    families = [get_family(f).name for f in families]
    for name, value in (("k", k), ("eval_k", eval_k), ("batch_size", batch_size)):
        check_count(name, value)
    check_euclidean_latent(model, "gap_report")
    x = check_batch(x, model.data_shape, "x", model.likelihood.support)
    condition = check_condition(condition, model.condition_dim, x.shape[0])
    n = int(x.shape[0])
    refine_steps, refine_learning_rate, refine_max_grad_norm, refine_samples = _refinement_settings(
        model, refine_steps, refine_learning_rate)
    say = print if verbose else (lambda *a, **kw: None)
    report = {"model": model.name, "examples": n, "k": k, "eval_k": eval_k, "latent_dim": model.latent_dim,
              "settings": {"steps": steps, "learning_rate": learning_rate, "samples": samples,
                           "refine_steps": refine_steps, "refine_learning_rate": refine_learning_rate,
                           "refine_max_grad_norm": refine_max_grad_norm, "refine_samples": refine_samples,
                           "batch_size": batch_size, "seed": seed},
              "paths": {}, "gaps": {}, "traces": {}}
    partial_path = None if out_path is None else "{0}.partial{1}".format(*os.path.splitext(out_path))

    def keep_so_far(next_step: str):
        if partial_path is not None:
            atomic_write_text(partial_path, json.dumps({**report, "unfinished": next_step}, indent=2) + "\n")

    encode = tf.function(lambda x, c: model.encode(x, c).sample(seed=[seed, 0]), autograph=False)
    encode(x[:1], _part(condition, slice(0, 1)))
    start = time.perf_counter()
    for part in _slices(n, batch_size):
        encode(x[part], _part(condition, part)).numpy()
    encoder_seconds = time.perf_counter() - start

    say(f"log p(x): importance sampling with the encoder, k={k}, {n} examples")
    encoder_terms, is_seconds = _importance(model, x, condition, k, seed)
    report["log_px_encoder"] = _stat(encoder_terms["log_px"])
    report["importance_sampling_seconds_per_example"] = is_seconds / n
    report["paths"]["encoder"] = _path_row(encoder_terms, encoder_seconds, n, label="encoder q(z|x)")
    path_terms = {"encoder": encoder_terms}
    keep_so_far("semi-amortized refinement")

    if refine_steps:
        say(f"semi-amortized: {refine_steps} refinement steps of the encoder's q")
        refine = tf.function(lambda x, c, s: refine_posterior(
            model, x, steps=refine_steps, learning_rate=refine_learning_rate, max_grad_norm=refine_max_grad_norm,
            samples=refine_samples, condition=c, seed=s, differentiable=False).params, autograph=False)
        refine(x[:1], _part(condition, slice(0, 1)), tf.constant([seed, 0]))
        start = time.perf_counter()
        refined = [refine(x[part], _part(condition, part), tf.constant([seed, i]))
                   for i, part in enumerate(_slices(n, batch_size))]
        refine_seconds = time.perf_counter() - start
        refined = tf.concat(refined, 0)
        terms, _ = _importance(model, x, condition, eval_k, seed + 1,
                               _batch_proposals(model.posterior_family.distribution, refined))
        report["paths"]["semi_amortized"] = _path_row(terms, refine_seconds, n,
                                                      label=f"semi-amortized ({refine_steps} steps)")
        path_terms["semi_amortized"] = terms
        keep_so_far("q* fits")

    fitted = {}
    for name in families:
        family = get_family(name)
        # The flow contains the full-covariance Gaussian: start it at that optimum when known.
        start_from = "full" if name == "flow" and "full" in fitted else None
        label = f"q* {name}" + (" (from q* full)" if start_from else "")
        say(f"{label}: optimising a {family.description} per example (up to {steps} steps)")
        fits = []
        for i, part in enumerate(_slices(n, batch_size)):
            initial = None
            if start_from:
                initial = {key: fitted[start_from][i].params[key] for key in ("loc", "raw_tril")}
            # From an optimum, full-size first Adam steps on the flow's new parameters would
            # throw it off; fine-tune with a tenth of the step size.
            rate = learning_rate / 10 if start_from else learning_rate
            fits.append(optimize_posterior(model, x[part], family=family, steps=steps, learning_rate=rate,
                                           samples=samples, condition=_part(condition, part), seed=[seed, i],
                                           initial_params=initial))
        fitted[name] = fits
        params = {key: tf.concat([f.params[key] for f in fits], 0) for key in fits[0].params}
        terms, _ = _importance(model, x, condition, eval_k, seed + 2, _batch_proposals(family.distribution, params))
        seconds = sum(f.seconds for f in fits + (fitted[start_from] if start_from else []))
        report["paths"][name] = _path_row(
            terms, seconds, n, label=label, family=family.description,
            steps=max(f.steps for f in fits), converged=float(np.mean(np.concatenate([f.converged for f in fits]))))
        report["traces"][name] = _mean_trace([f.trace for f in fits])
        path_terms[name] = terms
        keep_so_far("the next q* fit or the gaps")

    # log p(x): the importance-sampling estimates of the proposal that is best on average.
    best = max(path_terms, key=lambda name: path_terms[name]["log_px"].mean())
    log_px = path_terms[best]["log_px"]
    report["log_px"] = _stat(log_px)
    report["log_px_proposal"] = best
    report["gaps"]["total"] = _stat(log_px - encoder_terms["elbo"])
    for name in families:
        report["gaps"][name] = {"approximation": _stat(log_px - path_terms[name]["elbo"]),
                                "amortization": _stat(path_terms[name]["elbo"] - encoder_terms["elbo"])}

    if points:
        keep_so_far("point estimates")
        say("point estimates: maximum-likelihood and MAP latents")
        q_mean = tf.concat([moments(model.encode(x[p], _part(condition, p)))[0] for p in _slices(n, batch_size)], 0)
        log_px_z = np.concatenate([model.decode(q_mean[p], _part(condition, p)).log_prob(x[p]).numpy()
                                   for p in _slices(n, batch_size)])
        log_pz = model.prior().log_prob(q_mean).numpy()
        report["points"] = {"encoder_mean": {"log_px_z": _stat(log_px_z), "log_pz": _stat(log_pz),
                                             "norm": _stat(np.linalg.norm(q_mean.numpy(), axis=-1))}}
        for kind in ("ml", "map"):
            found = [point_estimate(model, x[p], kind=kind, steps=steps, learning_rate=learning_rate,
                                    condition=_part(condition, p)) for p in _slices(n, batch_size)]
            row = {key: _stat(np.concatenate([getattr(f, key) for f in found]))
                   for key in ("log_px_z", "log_pz", "log_joint", "norm")}
            row["converged"] = float(np.mean(np.concatenate([f.converged for f in found])))
            row["seconds_per_example"] = sum(f.seconds for f in found) / n
            if kind == "map":
                z = np.concatenate([f.z for f in found])
                laplace = laplace_log_likelihood(model, x, z, condition)
                row["laplace_log_px"] = _stat(laplace)
                row["laplace_undefined"] = int(np.isnan(laplace).sum())
            report["points"][kind] = row

    report["active_units"] = active_units(model, x.numpy() if condition is None else (x.numpy(), condition.numpy()))
    if out_path is not None:
        atomic_write_text(out_path, json.dumps(report, indent=2) + "\n")
        if os.path.exists(partial_path):
            os.remove(partial_path)
    return report


def _batch_proposals(distribution, params):
    """proposal(i) for importance-sampling batch i: `distribution` of the rows of `params`
    (a tensor or a dict of tensors, [N, ...]) that belong to that batch's examples."""
    return lambda i: distribution(tf.nest.map_structure(lambda p: p[i * IS_BATCH:(i + 1) * IS_BATCH], params))


def format_gap_table(report: dict) -> str:
    """The report as a plain-text table (nats; mean ± standard error over the examples)."""
    def pm(stat, width=8):
        return f"{stat['mean']:>{width}.2f} ± {stat['se']:<5.2f}"

    def ms(seconds):
        return f"{1000 * seconds:>10.2f} ms"

    lines = [f"Inference gaps of {report['model']} on {report['examples']} examples "
             f"(nats per example; mean ± s.e.)",
             f"  log p(x), best importance-sampling estimate ({report['log_px_proposal']} as proposal):"
             f" {pm(report['log_px'])}",
             f"  log p(x), IWAE with the encoder as proposal, k={report['k']}: {pm(report['log_px_encoder'])}"
             f"   ({ms(report['importance_sampling_seconds_per_example']).strip()} per example)",
             "",
             f"  {'posterior':<34}{'ELBO':>16}{'E_q log p(x|z)':>18}{'KL':>16}"
             f"{'approx. gap':>17}{'amort. gap':>17}{'time/example':>15}"]
    for name, row in report["paths"].items():
        gaps = report["gaps"].get(name)
        if gaps:
            gap_cells = f"{pm(gaps['approximation'], 9)}{pm(gaps['amortization'], 9)}"
        elif name == "encoder":
            gap_cells = f"{'total gap':>9}{pm(report['gaps']['total'], 8)}{'':>9}"
        else:
            gap_cells = " " * 34
        lines.append(f"  {row['label']:<34}{pm(row['elbo'])}{pm(row['log_px_z'])}{pm(row['kl'])}"
                     f"{gap_cells}{ms(row['seconds_per_example'])}")
    lines.append("  (q*: fitted per example; approx. gap = log p(x) - ELBO[q*], amort. gap = ELBO[q*] - ELBO[q])")
    proposals = {name: row["iwae"]["mean"] for name, row in report["paths"].items() if name != "encoder"}
    if proposals:
        lines.append(f"  IWAE with the others as proposals (k={report['eval_k']}): " +
                     ", ".join(f"{name} {value:.2f}" for name, value in proposals.items()))
    if "points" in report:
        points = report["points"]
        lines += ["", f"  {'point estimate of z':<34}{'log p(x|z)':>16}{'log p(z)':>16}{'|z|':>16}",
                  f"  {'encoder mean':<34}{pm(points['encoder_mean']['log_px_z'])}"
                  f"{pm(points['encoder_mean']['log_pz'])}{pm(points['encoder_mean']['norm'])}"]
        for kind, label in (("map", "MAP: max log p(x|z) + log p(z)"), ("ml", "ML: max log p(x|z)")):
            row = points[kind]
            lines.append(f"  {label:<34}{pm(row['log_px_z'])}{pm(row['log_pz'])}{pm(row['norm'])}"
                         f"   ({100 * row['converged']:.0f}% converged)")
        lines.append(f"  A point has no ELBO (a point mass's is -inf). log p(x|z_ML) = "
                     f"{points['ml']['log_px_z']['mean']:.2f} is an upper bound on log p(x); Laplace at MAP "
                     f"estimates log p(x) ~= {points['map']['laplace_log_px']['mean']:.2f}"
                     + (f" ({points['map']['laplace_undefined']} examples undefined)"
                        if points['map']['laplace_undefined'] else "") + ".")
    units = report["active_units"]
    per_layer = units.get("active_per_layer")
    lines += ["", f"  active units (Var_x E_q[z_i] > {units['threshold']}): {units['active']} of {units['latent_dim']}"
              + (f" ({', '.join(f'z{i + 1}: {n}' for i, n in enumerate(per_layer))})" if per_layer else "")]
    return "\n".join(lines)


REFERENCE_MODEL = "vae_bmnist"      # the comparison table's first row: the plain VAE the others improve on


def gap_comparison_table(reports: dict) -> str:
    """The reports of several models (name -> `gap_report` dict) as two Markdown tables: the
    ELBO of each inference path and log p(x) (mean ± s.e., nats), then the gaps (against the
    best q* family: the one whose ELBO is highest) and the time per example of each path.
    `REFERENCE_MODEL` first, then the others by name."""
    def pm(stat):
        return f"{stat['mean']:.2f} ± {stat['se']:.2f}"

    def ms(seconds):
        value = 1000 * seconds
        return f"{value:,.0f} ms" if value >= 100 else f"{value:.2g} ms" if value < 1 else f"{value:.1f} ms"

    names = sorted(reports, key=lambda name: (name != REFERENCE_MODEL, name))
    families = [family for family in ("diag", "full", "flow") if any(family in r["paths"] for r in reports.values())]

    def cell(report, path, value):
        return value(report["paths"][path]) if path in report["paths"] else "–"

    labels = {"diag": "q* diagonal", "full": "q* full covariance", "flow": "q* flow"}
    bounds = ["| model | encoder q(z\\|x) | semi-amortized | " + " | ".join(labels[f] for f in families)
              + " | log p(x) (proposal) |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in families) + " | ---: |"]
    costs = ["| model | total gap | amortization gap | approximation gap | best q* | encoder | semi-amortized | "
             + " | ".join(labels[f] for f in families) + " | importance sampling, encoder |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | " + " | ".join("---:" for _ in families) + " | ---: |"]
    for name in names:
        report = reports[name]
        elbo = [cell(report, path, lambda row: pm(row["elbo"])) for path in ("encoder", "semi_amortized", *families)]
        bounds.append(f"| `{name}` | " + " | ".join(elbo) + f" | {pm(report['log_px'])} ({report['log_px_proposal']}) |")
        fitted = [f for f in families if f in report["gaps"]]
        best = max(fitted, key=lambda f: report["paths"][f]["elbo"]["mean"])
        times = [cell(report, path, lambda row: ms(row["seconds_per_example"]))
                 for path in ("encoder", "semi_amortized", *families)]
        costs.append(f"| `{name}` | {pm(report['gaps']['total'])} | {pm(report['gaps'][best]['amortization'])} | "
                     f"{pm(report['gaps'][best]['approximation'])} | {best} | " + " | ".join(times)
                     + f" | {ms(report['importance_sampling_seconds_per_example'])} |")
    return "\n".join(bounds) + "\n\n" + "\n".join(costs) + "\n"


def read_gap_reports(directory: str, prefix: str = "gaps_") -> dict:
    """name -> report of every `<directory>/<prefix><name>/gaps.json` (as `tfvae gaps --out`
    writes them)."""
    reports = {}
    for path in sorted(glob.glob(os.path.join(directory, f"{prefix}*", "gaps.json"))):
        with open(path) as f:
            reports[os.path.basename(os.path.dirname(path))[len(prefix):]] = json.load(f)
    return reports


def replace_gap_table(text: str, reports: dict) -> str:
    """`text` (the README) with its gaps-table block replaced by `gap_comparison_table(reports)`."""
    return replace_marked_block(text, "gaps-table", gap_comparison_table(reports))


def plot_gaps(report: dict, path: str):
    """PNG with two panels: the gap decomposition per family (stacked bars), and the mean
    ELBO of each family against optimisation steps, with the encoder's ELBO and log p(x)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tfvae.io import atomic_path

    families = [name for name in report["gaps"] if name != "total"]
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.5))
    approximation = [report["gaps"][f]["approximation"]["mean"] for f in families]
    amortization = [report["gaps"][f]["amortization"]["mean"] for f in families]
    positions = np.arange(len(families))
    bars.bar(positions, approximation, label="approximation gap: log p(x) - ELBO[q*]", color="tab:blue")
    bars.bar(positions, amortization, bottom=approximation, label="amortization gap: ELBO[q*] - ELBO[q]",
             color="tab:orange")
    bars.axhline(report["gaps"]["total"]["mean"], color="black", linestyle="--", linewidth=1,
                 label="total: log p(x) - ELBO[q]")
    bars.set_xticks(positions, [report["paths"][f]["label"] for f in families], fontsize=8)
    bars.set_ylabel("nats per example")
    bars.set_title(f"Gap decomposition ({report['examples']} examples)")
    bars.legend(fontsize=8)

    for name in families:
        trace = np.asarray(report["traces"][name])
        window = max(1, len(trace) // 50)
        smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
        curves.plot(np.arange(len(smooth)) + window, smooth, label=f"ELBO of {report['paths'][name]['label']}")
    curves.axhline(report["log_px"]["mean"], color="black", label="log p(x) (best importance-sampling estimate)")
    curves.axhline(report["paths"]["encoder"]["elbo"]["mean"], color="gray", linestyle="--",
                   label="ELBO of the encoder's q")
    if "semi_amortized" in report["paths"]:
        curves.axhline(report["paths"]["semi_amortized"]["elbo"]["mean"], color="gray", linestyle=":",
                       label=report["paths"]["semi_amortized"]["label"])
    top = report["log_px"]["mean"]
    span = max(1.0, 1.5 * (top - report["paths"]["encoder"]["elbo"]["mean"]))
    curves.set_ylim(top - 2 * span, top + 0.3 * span)
    curves.set_xlabel("optimisation step")
    curves.set_ylabel("mean ELBO (nats, single-sample estimates, smoothed)")
    curves.set_title("Per-example optimisation from the encoder's q")
    curves.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
