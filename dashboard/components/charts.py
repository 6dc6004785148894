"""Plotly figures. They only draw numbers that core computed; nothing here decides or measures."""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.wording import fixed
from dashboard.components.reports import percent, threshold_value

# Each model's colour, line dash and marker, by its place on the page: the Okabe-Ito colours (yellow left out, too
# pale on white), which stay apart under the common colour-vision deficiencies, and a dash and a marker of its own
# besides, so no model is told from another by colour alone (an accessibility review: two of the four models
# Compare opens on were 3 CIEDE2000 units apart under deuteranopia, with the same solid line and diamond).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("diamond", "square", "circle", "triangle-up", "x", "star", "cross", "hexagon")
MUTED = "#9aa9b2"
GRID = "#dde5ea"


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _places(names: list[str], order: list[str] | None) -> dict[str, int]:
    """Each model's place: in ``order`` (every model on the page, so a model keeps its colour, dash and marker in
    every chart, also where others have nothing to draw), else among ``names``."""
    order = list(order or []) + [name for name in names if name not in (order or [])]
    return {name: order.index(name) for name in names}


def _colors(names: list[str], order: list[str] | None) -> dict[str, str]:
    return {name: color(place) for name, place in _places(names, order).items()}


def _dashes(names: list[str], order: list[str] | None) -> dict[str, str]:
    return {name: DASHES[place % len(DASHES)] for name, place in _places(names, order).items()}


def _symbols(names: list[str], order: list[str] | None) -> dict[str, str]:
    return {name: SYMBOLS[place % len(SYMBOLS)] for name, place in _places(names, order).items()}


def _layout(fig: go.Figure, height: int, **extra) -> go.Figure:
    settings = dict(height=height, margin=dict(l=10, r=10, t=36, b=10), plot_bgcolor="white", font=dict(size=13),
                    legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    fig.update_layout(**{**settings, **extra})
    fig.update_xaxes(gridcolor=GRID, zeroline=False)
    fig.update_yaxes(gridcolor=GRID, zeroline=False)
    return fig


def roc_curves(curves: list, order: list[str] | None = None) -> go.Figure:
    """``curves``: :class:`~dashboard.components.reports.RocCurve` (name, fpr, tpr, auc, operating point);
    ``order``: every model on the page, for its colour (:func:`_colors`)."""
    names = [curve.name for curve in curves]
    colors, dashes, symbols = _colors(names, order), _dashes(names, order), _symbols(names, order)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color=MUTED, dash="dot"),
                             name="chance", hoverinfo="skip"))
    for curve in curves:
        auc = f"{curve.auc_label} {fixed(curve.auc, 3)}" if curve.auc is not None else f"{curve.auc_label} n/a"
        # hovers written here, as the tables write them: plotly's own %{y:.3f} showed 0.99996 as 1.000 (a review)
        fig.add_trace(go.Scatter(x=curve.fpr, y=curve.tpr, mode="lines",
                                 line=dict(color=colors[curve.name], width=2.5, dash=dashes[curve.name]),
                                 name=f"{curve.name} ({auc})", legendgroup=curve.name,
                                 customdata=[[fixed(x, 3), fixed(y, 3)] for x, y in zip(curve.fpr, curve.tpr)],
                                 hovertemplate="1 − specificity %{customdata[0]}<br>sensitivity %{customdata[1]}"
                                               "<extra></extra>"))
        if curve.point_fpr is not None and curve.point_tpr is not None:
            fig.add_trace(go.Scatter(
                x=[curve.point_fpr], y=[curve.point_tpr], mode="markers", legendgroup=curve.name,
                marker=dict(color=colors[curve.name], size=13, symbol=symbols[curve.name],
                            line=dict(color="white", width=1.5)),
                name=f"{curve.name} operating point", showlegend=False,
                hovertemplate=(f"{curve.name} operating point<br>threshold {threshold_value(curve.threshold)}"
                               "<br>sensitivity %{customdata[0]}<br>specificity %{customdata[1]}<extra></extra>"),
                customdata=[[fixed(curve.point_tpr, 3), fixed(1 - curve.point_fpr, 3)]],
            ))
    fig.update_xaxes(range=[0, 1], title="1 − specificity (false-positive rate)", constrain="domain")
    fig.update_yaxes(range=[0, 1.02], title="sensitivity (true-positive rate)", scaleanchor="x", scaleratio=1)
    return _layout(fig, 560, legend=dict(orientation="h", yanchor="top", y=-0.16, x=0),
                   margin=dict(l=10, r=10, t=10, b=10))


def class_roc_curves(curves: dict[str, list], order: list[str] | None = None) -> go.Figure:
    """One-vs-rest ROC per class, one panel per class (``curves``: class -> RocCurve per model), each model in
    its colour in every panel, its AUC for that class on hover."""
    classes = list(curves)
    columns = 2 if len(classes) == 4 else max(1, len(classes))
    rows = -(-len(classes) // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[f"{c} vs the rest" for c in classes],
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    names = list(dict.fromkeys(curve.name for panel in curves.values() for curve in panel))
    colors, dashes = _colors(names, order), _dashes(names, order)
    for k, class_name in enumerate(classes):
        row, col = k // columns + 1, k % columns + 1
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color=MUTED, dash="dot"),
                                 showlegend=False, hoverinfo="skip"), row=row, col=col)
        for curve in curves[class_name]:
            auc = f"AUC {fixed(curve.auc, 3)}" if curve.auc is not None else "AUC n/a"  # 0.99967 is not "1.000"
            fig.add_trace(go.Scatter(
                x=curve.fpr, y=curve.tpr, mode="lines", name=curve.name,
                line=dict(color=colors[curve.name], width=2.2, dash=dashes[curve.name]),
                legendgroup=curve.name, showlegend=k == 0,
                customdata=[[fixed(x, 3), fixed(y, 3)] for x, y in zip(curve.fpr, curve.tpr)],  # not %{y:.3f}: 1.000
                hovertemplate=(f"{curve.name}, {class_name} ({auc})<br>1 − specificity %{{customdata[0]}}"
                               "<br>sensitivity %{customdata[1]}<extra></extra>")), row=row, col=col)
    fig.update_xaxes(range=[0, 1], title="1 − specificity", constrain="domain")
    fig.update_yaxes(range=[0, 1.02], title="sensitivity")
    # the legend under the axis titles, in pixels of the whole figure: at y=-0.08 of the plot it sat on the first
    # panel's "1 − specificity" when the panels stood in one row (a browser review)
    return _layout(fig, 130 + 330 * rows, legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0),
                   margin=dict(l=10, r=10, t=30, b=70))


def confusion_matrix(matrix: list[list[int]], classes: list[str], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(
        z=matrix, x=classes, y=classes, colorscale=[[0, "#f4f8fa"], [1, PALETTE[0]]], showscale=False,
        text=matrix, texttemplate="%{text}", textfont=dict(size=16),
        hovertemplate="true %{y}, called %{x}: %{z}<extra></extra>",
    ))
    fig.update_xaxes(title="called by the model", side="bottom", showgrid=False)
    fig.update_yaxes(title="true class", autorange="reversed", showgrid=False)
    return _layout(fig, 300 + 50 * max(0, len(classes) - 2), title=dict(text=title, font=dict(size=14)))


def training_curves(histories: dict[str, list], order: list[str] | None = None) -> go.Figure:
    """Per model: training loss (solid) and validation loss (dotted) by epoch; validation AUC beside them."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Validation AUC"), horizontal_spacing=0.1)
    colors, symbols = _colors(list(histories), order), _symbols(list(histories), order)
    for name, history in histories.items():  # each model its marker besides its colour (dashes tell the losses apart)
        epochs = [h.epoch for h in history]
        style, marker = dict(color=colors[name], width=2), dict(symbol=symbols[name], size=8)
        fig.add_trace(go.Scatter(x=epochs, y=[h.train_loss for h in history], mode="lines+markers", line=style,
                                 marker=marker, name=f"{name} training loss", legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=[h.val_loss for h in history], mode="lines+markers", marker=marker,
                                 line=dict(style, dash="dot"), name=f"{name} validation loss", legendgroup=name),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=[h.val_auc for h in history], mode="lines+markers", line=style,
                                 marker=marker, name=f"{name} validation AUC", legendgroup=name, showlegend=False),
                      row=1, col=2)
    fig.update_xaxes(title="epoch", dtick=1)
    return _layout(fig, 440, legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                   margin=dict(l=10, r=10, t=30, b=10))


def live_training(step_losses: list, epochs: list, total_epochs: int) -> go.Figure:
    """A running job: loss at every step (:class:`~core.jobs.progress.StepLoss`: epoch, loss), and validation
    AUC as each epoch ends (:class:`~core.training.events.EpochEvent`: epoch, val_loss, val_auc)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=[s.epoch for s in step_losses], y=[s.loss for s in step_losses],
                             mode="lines" if len(step_losses) > 1 else "markers",  # one step: a line draws nothing
                             line=dict(color=PALETTE[0], width=1.5), name="training loss (per step)"))
    fig.add_trace(go.Scatter(x=[e.epoch for e in epochs], y=[e.val_loss for e in epochs], mode="markers",
                             marker=dict(color=PALETTE[0], symbol="circle-open", size=9), name="validation loss"))
    fig.add_trace(go.Scatter(x=[e.epoch for e in epochs], y=[e.val_auc for e in epochs], mode="lines+markers",
                             line=dict(color=PALETTE[1], width=2.5), marker=dict(size=9), name="validation AUC"),
                  secondary_y=True)
    fig.update_xaxes(title="epoch", range=[0, max(1, total_epochs) + 0.05])
    fig.update_yaxes(title="loss", rangemode="tozero", secondary_y=False)
    # from 0.4, or lower to show the worst epoch (found in a browser audit: an AUC of 0.000 was off the chart)
    floor = min([0.4] + [math.floor(e.val_auc * 10) / 10 for e in epochs
                         if e.val_auc is not None and math.isfinite(e.val_auc)])
    fig.update_yaxes(title="validation AUC", range=[floor - 0.01, 1.01], tickmode="linear", tick0=floor, dtick=0.1,
                     secondary_y=True, showgrid=False)
    # the legend in the bottom margin: above the plot it wrapped into the loss line's first steps (a browser review)
    return _layout(fig, 400, legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0),
                   margin=dict(l=10, r=10, t=20, b=70))


def travel_intervals(points: list, order: list[str] | None = None) -> go.Figure:
    """``points``: :class:`~dashboard.components.reports.TravelPoint`. Sensitivity and specificity side by side,
    one row per set of films, one colour per model, each value with its 95 % interval as a bar."""
    figures = ("Sensitivity", "Specificity")
    fig = make_subplots(rows=1, cols=2, subplot_titles=figures, shared_yaxes=True, horizontal_spacing=0.04)
    models = list(dict.fromkeys(p.model for p in points))
    colors, symbols = _colors(models, order), _symbols(models, order)
    films = list(dict.fromkeys(p.films for p in points))[::-1]  # plotly draws the first category at the bottom
    for model in models:
        for col, figure in enumerate(figures, start=1):
            mine = [p for p in points if p.model == model and p.figure == figure]
            fig.add_trace(go.Scatter(
                x=[p.value for p in mine], y=[p.films for p in mine], mode="markers", orientation="h",
                name=model, legendgroup=model,
                showlegend=col == 1, marker=dict(color=colors[model], size=11, symbol=symbols[model]),
                error_x=dict(type="data", symmetric=False, thickness=2,
                             array=[0 if p.high is None else p.high - p.value for p in mine],
                             arrayminus=[0 if p.low is None else p.value - p.low for p in mine]),
                customdata=[percent(p.value) for p in mine],  # never 0.9996 as 100.0 % (a review)
                hovertemplate=f"{model}<br>%{{y}}: {figure.lower()} %{{customdata}}<extra></extra>",
            ), row=1, col=col)
    fig.update_xaxes(range=[0, 1.02], tickformat=".0%")
    fig.update_yaxes(categoryorder="array", categoryarray=films)
    return _layout(fig, 120 + 30 * len(films) * max(2, len(models)), scattermode="group",  # models side by side
                   legend=dict(orientation="h", yanchor="top", y=-0.15, x=0), margin=dict(l=10, r=10, t=30, b=10))
