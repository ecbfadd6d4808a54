"""``report.html``: one self-contained page per run, built from ``report.json``'s content.

Everything is inside the file: the style sheet inline, the pictures as PNG data URIs, no
script; it opens offline and can be mailed. Sections: the run, convergence, the model
(one row per component, sorted by weight), selection (when a grid ran), the components
(the scatter-plot matrix and the projection on the separating directions,
``dgmm.core.directions``), predictions, and drift (when new data were scored against a
saved model).

The model table shows, beside weight, mean and the covariance's scale, the decomposition
the covariance family gives (``family.decomposition(covariances, n_components,
n_features)``): mclust's volume, shape and orientation (a tuple, shared parts once), or a
dict ``{name: per-component array}``, one column per part.
"""
from __future__ import annotations

import base64
import html
import math

import numpy as np

from ..core.directions import separating_directions
from ..core.params import GMMParams
from . import report_plots
from .plots import classification_figure, pairs_figure

#: entries of a vector shown in a table cell before an ellipsis
MAX_VECTOR_ENTRIES = 6

STYLE = """
:root { --ink:#1f2933; --muted:#52606d; --line:#d9e2ec; --bg:#f5f7fa; --accent:#2f6fb3;
        --good:#2f855a; --bad:#c53030; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
       sans-serif; color:var(--ink); background:var(--bg); }
header { background:#1f3a5f; color:#fff; padding:22px 36px 18px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header .sub { color:#c8d6e5; font-size:14px; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 36px;
      position:sticky; top:0; z-index:1; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:14px; }
main { max-width:1180px; margin:0 auto; padding:20px 36px 48px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:4px 0 18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 16px;
        min-width:150px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
               letter-spacing:.04em; }
.card .value { font-size:22px; font-weight:600; }
section { background:#fff; border:1px solid var(--line); border-radius:8px;
          padding:14px 22px 18px; margin:0 0 18px; }
h2 { font-size:19px; margin:4px 0 10px; }
h3 { font-size:15px; margin:14px 0 6px; color:var(--muted); }
table { border-collapse:collapse; font-size:13.5px; margin:6px 0 10px; }
th, td { border-bottom:1px solid var(--line); padding:4px 12px 4px 0; text-align:left;
         vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.num { font-variant-numeric:tabular-nums; text-align:right; }
tr.best td { background:#fff8db; font-weight:600; }
.kv th { width:210px; }
.figs { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
figure { margin:0; flex:0 1 auto; min-width:300px; }
figure.wide { flex-basis:100%; }
figure img { max-width:100%; border:1px solid var(--line); border-radius:4px; }
.figs > div { flex:0 0 auto; }
figcaption { color:var(--muted); font-size:13px; max-width:640px; }
.note { color:var(--muted); font-size:13.5px; }
.ok { color:var(--good); font-weight:600; }
.alert { color:var(--bad); font-weight:600; }
code { font-size:13px; background:var(--bg); padding:1px 4px; border-radius:3px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 0 24px; }
"""


# ------------------------------------------------------------------------ formatting


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def number(value, digits: int = 6) -> str:
    """A number for a table cell: integers with separators, floats to ``digits``
    significant digits, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def vector(values, digits: int = 4) -> str:
    values = np.ravel(np.asarray(values, dtype=float))
    shown = ", ".join(number(v, digits) for v in values[:MAX_VECTOR_ENTRIES])
    more = f", … ({len(values)} in all)" if len(values) > MAX_VECTOR_ENTRIES else ""
    return f"[{shown}{more}]"


def table(headers, rows, numeric=(), best_row: int | None = None) -> str:
    """An HTML table; ``rows`` hold already formatted cell text (escaped here)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{esc(c)}</td>' if j in numeric else f"<td>{esc(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f'<tr class="best">{cells}</tr>' if i == best_row else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(pairs) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs
                   if v is not None)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def image(fig, alt: str, caption: str = "", dpi: int = 96, wide: bool = False) -> str:
    """A figure (or PNG bytes already rendered) as an ``<img>`` with a data URI."""
    png = fig if isinstance(fig, bytes) else report_plots.png_bytes(fig, dpi=dpi)
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    kind = ' class="wide"' if wide else ""
    return (f'<figure{kind}><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"{cap}</figure>")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


# --------------------------------------------------------------------------- sections


#: the parts of mclust's Sigma_k = lambda_k D_k A_k D_k^T, with the number of axes one
#: component's part has (a shared part has that many, a per-component part one more)
DECOMPOSITION_PARTS = (("volume", 0), ("shape", 1), ("orientation", 2))


def _decomposition_columns(params: GMMParams) -> dict[str, tuple[np.ndarray, bool]]:
    """{column name: (values, per component)} from the family's ``decomposition``: a
    tuple (volumes, shapes, orientations) whose shared parts come once, or a dict of
    per-component arrays."""
    decomposition = getattr(params.family, "decomposition", None)
    if not callable(decomposition):
        return {}
    parts = decomposition(params.covariances, params.n_components, params.n_features)
    if isinstance(parts, dict):
        return {name: (np.asarray(values), True) for name, values in parts.items()}
    return {name: (np.asarray(values), np.ndim(values) == axes + 1)
            for (name, axes), values in zip(DECOMPOSITION_PARTS, parts, strict=True)}


def _cell(value) -> str:
    """A scalar, a vector, or a matrix by its first column (the leading axis)."""
    value = np.asarray(value)
    if value.ndim == 0:
        return number(value, 4)
    return vector(value if value.ndim == 1 else value[:, 0])


def component_table(params: GMMParams) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the model table: one row per component, heaviest first; the
    decomposition's columns say when a part is shared by every component."""
    k, d = params.n_components, params.n_features
    covariances = params.family.full_covariances(params.covariances, k, d)
    _, logdet = np.linalg.slogdet(covariances)
    scale = np.exp(logdet / (2 * d))  # geometric mean of the sd along the principal axes
    columns = _decomposition_columns(params)
    headers = ["component", "weight", "mean", "sd scale"] + [
        name + ("" if per_component else " (shared)")
        + (" (first axis)" if np.ndim(values) - per_component >= 2 else "")
        for name, (values, per_component) in columns.items()]
    rows = []
    for j in np.argsort(-params.weights, kind="stable"):
        row = [str(j), number(params.weights[j], 4), vector(params.means[j]),
               number(scale[j], 4)]
        row += [_cell(values[j] if per_component else values)
                for values, per_component in columns.values()]
        rows.append(row)
    return headers, rows


def _run_section(page: dict) -> str:
    workflow = page.get("workflow") or {}
    data = page.get("data") or {}
    run = page.get("run") or {}
    predictions = page.get("predictions") or {}
    shape = data.get("shape")
    pairs = [
        ("workflow", workflow.get("name")),
        ("workflow file", workflow.get("file")),
        ("data source", f"{data.get('kind')} at {data.get('path') or 'an in-memory array'}"
         if data else None),
        ("rows x features", f"{shape[0]:,} x {shape[1]}" if shape else None),
        ("chunks", f"{len(data['row_chunks']):,}" if data.get("row_chunks") else None),
        ("missing entries", number(predictions.get("n_missing_entries"))
         if predictions else None),
        ("cluster", run.get("cluster")),
        ("model", run.get("model_path")),
        ("settings hash", workflow.get("settings_hash")),
        ("data fingerprint", data.get("fingerprint")),
        ("dgmm version", page.get("dgmm_version")),
        ("written", page.get("created")),
    ]
    body = key_values(pairs)
    steps = run.get("steps") or []
    if steps:
        rows = [[s["step"], s.get("status", "ran"),
                 "–" if s.get("seconds") is None else f"{s['seconds']:.2f}",
                 number(s.get("reads"))] for s in steps]
        total = sum(s.get("reads") or 0 for s in steps)
        body += "<h3>Steps</h3>" + table(["step", "status", "seconds", "reads of the data"],
                                         rows, numeric=(2, 3))
        body += (f'<p class="note">{total:,} reads of the data in all (a read is one pass '
                 "over every row; the report's drawing sample reads a few chunks).</p>")
    return section("run", "The run", body)


def _convergence_section(page: dict) -> str:
    curves = page.get("convergence") or []
    if not curves:
        return section("convergence", "Convergence",
                       '<p class="note">No iteration history was kept for this model.</p>')
    rows = [[c["label"] + (" (chosen)" if c.get("best") else ""), number(len(c["values"])),
             number(c["values"][-1] if c["values"] else None, 10)]
            for c in curves]
    best = next((i for i, c in enumerate(curves) if c.get("best")), None)
    model = page.get("model") or {}
    body = image(report_plots.convergence_figure(curves), "log-likelihood per iteration",
                 "Mean log-likelihood per row after each EM iteration, one line per "
                 "restart" + (" and candidate" if page.get("selection") else "")
                 + "; the chosen fit in black.")
    body += (f"<p>The chosen fit ran {number(model.get('n_iter'))} iterations, converged: "
             f"<b>{number(model.get('converged'))}</b>, final mean log-likelihood "
             f"<b>{number(model.get('lower_bound'), 10)}</b>.</p>")
    body += table(["fit", "iterations", "final mean log-likelihood"], rows, numeric=(1, 2),
                  best_row=best)
    return section("convergence", "Convergence", body)


def _model_section(page: dict, params: GMMParams) -> str:
    headers, rows = component_table(params)
    score = page.get("score") or {}
    intro = (f"<p>{params.n_components} components, covariance type "
             f"<code>{esc(params.covariance_type)}</code>, {params.n_features} features, "
             f"{number(params.n_free_parameters())} free parameters"
             + (f"; BIC {number(score['bic'], 10)}, AIC {number(score['aic'], 10)}"
                if score.get("bic") is not None else "") + ".</p>")
    variational = page.get("variational")
    if variational:
        intro += (f"<p>Variational Bayes ({esc(variational['weight_concentration_prior_type'])}"
                  f" prior on the weights): <b>{variational['kept_components']} of "
                  f"{params.n_components} components kept</b> (weight above "
                  f"{number(variational['kept_weight_threshold'])}); the curves under "
                  + ("Convergence are the lower bound per row.</p>"
                     if variational.get("fitted_by") != "stochastic variational inference"
                     else "Convergence are each pass's mean log normaliser per row "
                          "(stochastic variational inference).</p>"))
    note = ('<p class="note">Sorted by weight. sd scale: the geometric mean of the '
            "standard deviations along the component's principal axes, "
            "det(covariance)<sup>1/(2d)</sup>.</p>")
    return section("model", "The model",
                   intro + table(headers, rows, numeric=(1, 3)) + note)


def _selection_section(page: dict) -> str:
    selection = page.get("selection")
    if not selection:
        return ""
    import pandas as pd

    from .plots import criterion_figure, mclust_bic_figure

    criterion = selection["criterion"]
    results = pd.DataFrame(selection["results"])
    best = selection["best_params"]
    columns = [c for c in ("n_components", "covariance_type", "restart", criterion,
                           "lower_bound", "n_iter", "converged") if c in results.columns]
    ordered = results.sort_values(["covariance_type", "n_components"], kind="stable")
    best_value = results[criterion].min()
    rows, best_row = [], None
    for i, (_, r) in enumerate(ordered.iterrows()):
        if (best_row is None and r["n_components"] == best["n_components"]
                and r["covariance_type"] == best["covariance_type"]
                and r[criterion] == best_value):
            best_row = i
        rows.append([number(r[c], 10) if not isinstance(r[c], str) else r[c]
                     for c in columns])
    headers = ["K" if c == "n_components" else criterion.upper() if c == criterion
               else c.replace("_", " ") for c in columns]
    body = (f"<p>{len(results.drop_duplicates(['n_components', 'covariance_type'])):,} "
            f"candidates, best by {criterion.upper()} (lower is better): "
            f"<b>K={esc(best['n_components'])}, {esc(best['covariance_type'])}</b>; "
            f"{number(selection.get('n_passes'))} passes over the data for the whole "
            "grid.</p>")
    if criterion == "bic":
        body += image(mclust_bic_figure(results), "BIC against K",
                      "mclust's BIC plot: each candidate's best restart in mclust's sign "
                      "(2 log L - p log n, higher is better; the table below keeps dgmm's "
                      "sign, lower is better), one line per covariance model, the best "
                      "circled.")
    else:
        body += image(criterion_figure(results, criterion), f"{criterion} against K",
                      f"{criterion.upper()} of each candidate's best restart against K, one "
                      "line per covariance type; the best circled.")
    body += table(headers, rows, numeric=tuple(i for i, c in enumerate(columns)
                                               if c not in ("covariance_type", "converged")),
                  best_row=best_row)
    for refused in selection.get("refused") or ():
        body += (f'<p class="note">Refused: K={esc(refused["n_components"])} '
                 f'{esc(refused["covariance_type"])}: {esc(refused["reason"])}</p>')
    return section("selection", "Selection", body)


def _components_section(params: GMMParams, sample, labels, names, pairs_png=None) -> str:
    d = params.n_features
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    figs = []
    has_points = sample is not None and len(sample)
    if d >= 2 and has_points:
        pairs = pairs_png or pairs_figure(params, sample, labels, names=names)
        figs.append(image(pairs,
                          "scatter-plot matrix",
                          f"{len(sample):,} sampled rows coloured by their most probable "
                          "component, each component's 1 and 2 sd ellipses.", dpi=110,
                          wide=d > 3))
    if d >= 2 and has_points:
        figs.append(image(classification_figure(params, sample, names=names),
                          "classification and uncertainty",
                          "mclust's classification and uncertainty plots on the two features "
                          "that separate the components most: the larger and darker a point "
                          "on the right, the less certain its component.", wide=True))
    values, directions = separating_directions(params)
    if d >= 2:
        share = values[:2].sum() / values.sum() if values.sum() > 0 else float("nan")
        figs.append(image(
            report_plots.projection_figure(
                params, directions[:, :2], sample if has_points else None, labels,
                title="projection on the two most separating directions"),
            "separating directions",
            "Rows and components projected on the two directions that separate the "
            "components most (by their means and covariances; mclust's MclustDR idea), "
            f"with 1 and 2 sd ellipses; these two carry {share:.0%} of the separation."))
    body = f'<div class="figs">{"".join(figs)}</div>'
    rows = [[f"direction {i + 1}", number(values[i], 4), vector(directions[:, i], 3)]
            for i in range(min(d, 4))]
    body += "<h3>Separating directions</h3>" + table(
        ["direction", "eigenvalue", f"loadings on ({', '.join(names[:MAX_VECTOR_ENTRIES])}"
         + (", …" if d > MAX_VECTOR_ENTRIES else "") + ")"], rows, numeric=(1,))
    if not has_points:
        body += '<p class="note">No data sample was kept: the components only.</p>'
    return section("components", "The components", body)


def _predictions_section(page: dict) -> str:
    predictions = page.get("predictions")
    if not predictions:
        return ""
    counts = predictions["label_counts"]
    shares = predictions["shares"]
    n = max(predictions["n_scored"], 1)
    order = np.argsort(-np.asarray(counts), kind="stable")
    rows = [[str(k), number(counts[k]), f"{counts[k] / n:.2%}", f"{shares[k]:.4f}"]
            for k in order]
    body = (f"<p>{number(predictions['n_scored'])} of {number(predictions['n_rows'])} rows "
            f"scored, mean log-likelihood <b>{number(predictions['mean_log_likelihood'], 10)}"
            "</b>.</p>")
    body += "<h3>Cluster sizes</h3>" + table(
        ["component", "rows (most probable)", "share of rows", "mean membership"], rows,
        numeric=(1, 2, 3))
    quantiles = predictions["log_density_quantiles"]
    body += '<div class="figs">' + image(
        report_plots.uncertainty_figure(predictions["uncertainty_edges"],
                                        predictions["uncertainty_counts"]),
        "uncertainty histogram",
        "Uncertainty of each row's assignment, 1 - its largest membership probability "
        "(0: sure).")
    body += "<div><h3>Per-row log-density quantiles</h3>" + table(
        ["quantile", "log p(x)"], [[q, number(v, 6)] for q, v in quantiles.items()],
        numeric=(1,)) + "</div></div>"
    return section("predictions", "Predictions", body)


def _drift_section(page: dict) -> str:
    drift = page.get("drift")
    if not drift:
        return ""
    breaches = page.get("drift_breaches") or []
    thresholds = page.get("monitor") or {}
    if breaches:
        status = ('<p class="alert">Drift past the thresholds: '
                  + "; ".join(esc(b) for b in breaches) + ".</p>")
    elif any(v is not None for v in thresholds.values()):
        status = '<p class="ok">Within the thresholds of the monitor section.</p>'
    else:
        status = '<p class="note">No thresholds set (the workflow\'s monitor section).</p>'
    pairs = [
        ("mean log-likelihood at training", number(drift["mean_log_likelihood_training"], 8)),
        ("mean log-likelihood now", number(drift["mean_log_likelihood_now"], 8)),
        ("drop per row", number(drift["log_likelihood_drop"], 4)),
        ("largest share change", f"{drift['max_share_change']:.4f}"),
        (f"rows below the training {drift['anomaly_quantile']:.0%} quantile "
         f"({number(drift['anomaly_threshold'], 6)})",
         f"{drift['n_anomalies']:,} ({drift['anomaly_share']:.2%}; about "
         f"{drift['anomaly_quantile']:.0%} when nothing changed)"),
    ]
    limits = [(f"monitor.{k}", v) for k, v in thresholds.items() if v is not None]
    then, now = drift["shares_training"], drift["shares_now"]
    rows = [[str(k), f"{then[k]:.4f}", f"{now[k]:.4f}", f"{now[k] - then[k]:+.4f}"]
            for k in range(len(then))]
    body = status + key_values(pairs + limits) + '<div class="figs">' + image(
        report_plots.shares_figure({"training": then, "now": now}), "component shares",
        "Each component's share (mean membership) at training and now.") + "<div>" + table(
        ["component", "share at training", "share now", "change"], rows,
        numeric=(1, 2, 3)) + "</div></div>"
    return section("drift", "Drift against the training data", body)


def _cards(page: dict, params: GMMParams) -> str:
    model = page.get("model") or {}
    predictions = page.get("predictions") or {}
    data = page.get("data") or {}
    cards = [("components", str(params.n_components)),
             ("covariance", params.covariance_type),
             ("mean log-likelihood", number(
                 predictions.get("mean_log_likelihood", model.get("lower_bound")), 6)),
             ("rows", number((data.get("shape") or [predictions.get("n_rows")])[0]))]
    if page.get("score") and page["score"].get("bic") is not None:
        cards.append(("BIC", number(page["score"]["bic"], 8)))
    if page.get("drift"):
        checked = any(v is not None for v in (page.get("monitor") or {}).values())
        cards.append(("drift", "past thresholds" if page.get("drift_breaches")
                      else "within thresholds" if checked else "no thresholds set"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{esc(label)}</div>'
        f'<div class="value">{esc(value)}</div></div>' for label, value in cards) + "</div>"


def build_page(page: dict, params: GMMParams, sample: np.ndarray | None = None,
               labels: np.ndarray | None = None, names=None,
               pairs_png: bytes | None = None) -> str:
    """The HTML text of the report.

    page: the content of ``report.json`` (``dgmm.workflow.report``); params: the model;
    sample: (n, d) rows to draw, or None; labels: (n,) their components; names: (d,)
    feature names or None; pairs_png: the scatter-plot matrix already rendered (PNG).
    """
    workflow = (page.get("workflow") or {}).get("name")
    title = f"dgmm report: {workflow}" if workflow else "dgmm report"
    kind = "scoring against a saved model" if page.get("drift") else "fit"
    parts = [
        _run_section(page),
        _convergence_section(page),
        _model_section(page, params),
        _selection_section(page),
        _components_section(params, sample, labels, names, pairs_png),
        _predictions_section(page),
        _drift_section(page),
    ]
    links = [(a, t) for a, t in (("run", "Run"), ("convergence", "Convergence"),
                                 ("model", "Model"), ("selection", "Selection"),
                                 ("components", "Components"), ("predictions", "Predictions"),
                                 ("drift", "Drift")) if f'id="{a}"' in "".join(parts)]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><div class=\"sub\">{esc(kind)} · "
        f"{esc(page.get('created', ''))} · dgmm {esc(page.get('dgmm_version', ''))}</div>"
        f"</header><nav>{nav}</nav><main>{_cards(page, params)}{''.join(parts)}</main>"
        "<footer>Written by dgmm; this page is one file and needs no network.</footer>"
        "</body></html>\n"
    )
