"""Paper-style tables (Markdown, CSV) and plots (PNG) from the runs of a grid.

A table has one row per (dataset, model, other swept axes) and one column per method; each entry is the
mean ± sample standard deviation over seeds with the number of seeds n, and the best mean of a row is
bold only where it is clearly best: its 95% interval (Student t over seeds) lies above every other entry's. The
paper's numbers (``paper_results:`` in the grid: ``{dataset: {model: {method: top1}}}``) follow their row as an
extra "paper" row.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import registry
from ..serialization import atomic_write
from .stats import PairedDifference, paired_difference, t_quantile

ROW_AXES = ("dataset", "model")

__all__ = ["Stat", "Table", "mean_std", "build_table", "table_markdown", "table_csv", "paper_value", "write_plots",
           "comparisons", "comparisons_for", "paired_comparisons", "paired_markdown", "MethodSummary",
           "baseline_summary", "baseline_markdown", "method_label", "method_labels", "interval95"]


@dataclass
class Stat:
    mean: float
    std: float | None  # None when n < 2
    n: int


@dataclass
class Table:
    row_axes: list[str]
    methods: list[str]
    rows: list[tuple[tuple[str, ...], dict[str, Stat]]]
    # (row key, method) -> (the region's hit rate, the area-matched random boxes' hit rate), over seeds
    localization: dict[tuple[tuple[str, ...], str], tuple[Stat, Stat]] = field(default_factory=dict)

    def best(self, cells: dict[str, Stat]) -> str | None:
        """The method with the best mean, if its 95% interval lies above every other method's; else ``None`` (no
        entry is bold where seeds cannot tell the methods apart, nor where an entry has fewer than two seeds)."""
        scored = [(s.mean, m) for m, s in cells.items() if not math.isnan(s.mean)]
        if not scored:
            return None
        top = max(scored)[1]
        top_interval = interval95(cells[top])
        others = [interval95(cells[m]) for _, m in scored if m != top]
        if top_interval is None or any(other is None or other[1] >= top_interval[0] for other in others):
            return None
        return top


def interval95(stat: Stat) -> tuple[float, float] | None:
    """The Student-t 95% confidence interval of the mean over seeds; ``None`` with fewer than two seeds."""
    if stat.std is None or stat.n < 2:
        return None
    half = t_quantile(0.975, stat.n - 1) * stat.std / math.sqrt(stat.n)
    return stat.mean - half, stat.mean + half


def mean_std(values: Iterable[float]) -> Stat:
    """Mean and sample standard deviation (ddof=1; None for a single value) of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Stat(float("nan"), None, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def _label(value: Any) -> str:
    return "-" if value is None else str(value)


def row_axes_of(runs: list[dict[str, Any]]) -> list[str]:
    """dataset, model, then the other swept axes except method and seed (in grid order)."""
    extra: list[str] = []
    for run in runs:
        extra += [a for a in run["labels"] if a not in (*ROW_AXES, "method", "seed") and a not in extra]
    return [*ROW_AXES, *extra]


def build_table(runs: list[dict[str, Any]], metric: str = "top1") -> Table:
    """Group finished runs by row and method, over seeds (runs without ``metric`` are left out)."""
    done = [r for r in runs if r.get("status") == "finished" and r.get(metric) is not None]
    axes = row_axes_of(done)
    methods: list[str] = []
    groups: dict[tuple[str, ...], dict[str, list[float]]] = {}
    loc: dict[tuple[tuple[str, ...], str], list[tuple[float, float]]] = {}
    for run in done:
        key = tuple(_label(run["labels"].get(a)) for a in axes)
        method = _label(run["labels"]["method"])
        if method not in methods:
            methods.append(method)
        groups.setdefault(key, {}).setdefault(method, []).append(run[metric])
        if run.get("localization") and "hit" in run["localization"]:
            loc.setdefault((key, method), []).append((run["localization"]["hit"], run["localization"]["random"]))
    rows = [(key, {m: mean_std(v) for m, v in cells.items()}) for key, cells in groups.items()]
    localization = {k: (mean_std(a for a, _ in v), mean_std(r for _, r in v)) for k, v in loc.items()}
    return Table(row_axes=axes, methods=methods, rows=rows, localization=localization)


def paper_value(paper: dict[str, Any], key: tuple[str, ...], axes: list[str], method: str) -> float | None:
    """The paper's number for (dataset, model) of ``key`` and ``method``, if the grid provides it."""
    row = dict(zip(axes, key))
    value = ((paper or {}).get(row.get("dataset")) or {})
    value = (value.get(row.get("model")) or {}) if isinstance(value, dict) else {}
    number = value.get(method) if isinstance(value, dict) else None
    return float(number) if isinstance(number, (int, float)) else None


def _fmt(stat: Stat | None, bold: bool = False) -> str:
    if stat is None or stat.n == 0:
        return ""
    text = f"{stat.mean:.2f}" if stat.std is None else f"{stat.mean:.2f} ± {stat.std:.2f}"
    text = f"**{text}**" if bold else text
    return f"{text} (n={stat.n})"


def _loc_fmt(stat: Stat) -> str:
    return "" if stat.n == 0 else (f"{stat.mean:.3f}" if stat.std is None else f"{stat.mean:.3f} ± {stat.std:.3f}")


def table_markdown(table: Table, *, paper: dict[str, Any] | None = None, metric: str = "top1",
                   title: str | None = None) -> str:
    """A Markdown table: rows = datasets/models (+ swept axes), columns = methods (their display labels), the best
    mean of a row in bold where its 95% interval lies above every other entry's (``Table.best``); then, where the grid
    measured localisation, each method's hit rate."""
    labels = method_labels(table.methods)
    header = [*table.row_axes, *(labels[m] for m in table.methods)]
    lines = [f"### {title}", ""] if title else []
    lines += [f"Top-1 accuracy (%, {'final epoch' if metric == 'top1' else 'best epoch'}): "
              "mean ± std over seeds (n seeds); bold: the best of its row, where its 95% interval (t over seeds) "
              "lies above every other entry's.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for key, cells in table.rows:
        best = table.best(cells)
        lines.append("| " + " | ".join([*key, *(_fmt(cells.get(m), m == best) for m in table.methods)]) + " |")
        numbers = [paper_value(paper, key, table.row_axes, m) for m in table.methods]
        if any(v is not None for v in numbers):
            label = [*key[:-1], f"{key[-1]} (paper)"] if len(key) else ["paper"]
            lines.append("| " + " | ".join([*label, *("" if v is None else f"{v:.2f}" for v in numbers)]) + " |")
    if table.localization:
        located = [m for m in table.methods if any((key, m) in table.localization for key, _ in table.rows)]
        lines += ["", "Localisation: fraction of each method's region (the pixels it took from the partner) inside the "
                  "partner's object box, mean ± std over seeds; in brackets, area-matched random boxes.", "",
                  "| " + " | ".join([*table.row_axes, *(labels[m] for m in located)]) + " |",
                  "|" + "|".join("---" for _ in (*table.row_axes, *located)) + "|"]
        for key, _ in table.rows:
            rates = [table.localization.get((key, m)) for m in located]
            lines.append("| " + " | ".join([*key, *("" if r is None else f"{_loc_fmt(r[0])} ({_loc_fmt(r[1])})"
                                                    for r in rates)]) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: Table, *, paper: dict[str, Any] | None = None) -> str:
    """Wide CSV: row axes, ``source`` (ours/paper), then ``<method>_mean``, ``_std``, ``_n`` per method (its grid
    label, machine-readable, where the Markdown table shows the display label)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    located = [m for m in table.methods if any((key, m) in table.localization for key, _ in table.rows)]
    loc = [f"{m}_{s}" for m in located for s in ("hit", "hit_random")]
    writer.writerow([*table.row_axes, "source", *(f"{m}_{s}" for m in table.methods for s in ("mean", "std", "n")),
                     *loc])
    for key, cells in table.rows:
        values: list[Any] = []
        for m in table.methods:
            s = cells.get(m)
            values += ["", "", 0] if s is None else [f"{s.mean:.4f}", "" if s.std is None else f"{s.std:.4f}", s.n]
        extra = []
        for m in located:
            a, r = table.localization.get((key, m), (Stat(float("nan"), None, 0),) * 2)
            extra += ["" if a.n == 0 else f"{a.mean:.4f}", "" if r.n == 0 else f"{r.mean:.4f}"]
        writer.writerow([*key, "ours", *values, *extra])
        numbers = [paper_value(paper, key, table.row_axes, m) for m in table.methods]
        if any(v is not None for v in numbers):
            writer.writerow([*key, "paper", *(x for v in numbers for x in ("" if v is None else f"{v:.2f}", "", "")),
                             *([""] * len(loc))])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ plots
def _curve(runs: list[dict[str, Any]], key: str = "top1") -> tuple[list[int], list[float], list[float]]:
    per_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.get("curve") or []:
            if row.get(key) is not None:
                per_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(per_epoch)
    stats = [mean_std(per_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in stats], [s.std or 0.0 for s in stats]


def _numeric(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def write_plots(runs: list[dict[str, Any]], out: Path, *, metric: str = "top1",
                paper: dict[str, Any] | None = None) -> list[Path]:
    """Accuracy curves per method, an ablation curve per numeric swept axis, and a bar chart per dataset; none (with
    a warning) where matplotlib is not installed (the [train-light] extra): the tables are the results."""
    try:
        import matplotlib  # optional (the [train] extra), and slow to import: only where plots are drawn
    except ImportError:
        warnings.warn("plots skipped: matplotlib is not installed (pip install matplotlib); the tables and the "
                      "results are written", stacklevel=2)
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    done = [r for r in runs if r.get("status") == "finished"]
    if not done:
        return []
    table = build_table(done, metric)
    axes, labels = table.row_axes, method_labels(table.methods)
    written: list[Path] = []
    datasets = sorted({k[0] for k, _ in table.rows})
    for dataset in datasets:
        rows = [(k, c) for k, c in table.rows if k[0] == dataset]
        # Accuracy curves: one panel per row, a line per method (mean over seeds, band = ± std).
        cols = min(3, len(rows))
        nrows = math.ceil(len(rows) / cols)
        fig, grid = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
        # One legend for the figure, beside the panels: a legend in each panel covered its curves. A method keeps
        # its colour in every panel (the property cycle would restart per panel, skipping absent methods).
        colours = {m: f"C{i % 10}" for i, m in enumerate(table.methods)}
        handles: dict[str, Any] = {}
        dashed = False
        for ax, (key, _) in zip(grid.flat, rows):
            for method in table.methods:
                members = [r for r in done if tuple(_label(r["labels"].get(a)) for a in axes) == key
                           and _label(r["labels"]["method"]) == method]
                epochs, mean, std = _curve(members)
                if epochs:
                    handles[labels[method]], = ax.plot(epochs, mean, marker="o" if len(epochs) < 15 else None, ms=3,
                                                       color=colours[method])
                    ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                    alpha=0.15, color=colours[method])
                    t_epochs, t_mean, _ = _curve(members, "train_top1")
                    if t_epochs:  # --eval-train: the un-augmented training split, dashed in the same colour
                        ax.plot(t_epochs, t_mean, ls="--", lw=1, color=colours[method])
                        dashed = True
            ax.set_title(" / ".join(f"{a}={v}" if a not in ROW_AXES else v for a, v in zip(axes[1:], key[1:])),
                         fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 ticks
            ax.set_xlabel("epoch")
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
        for ax in list(grid.flat)[len(rows):]:
            ax.axis("off")
        if dashed:
            handles["held-out split"] = Line2D([], [], color="grey")
            handles["training split (un-augmented)"] = Line2D([], [], color="grey", ls="--", lw=1)
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
                   frameon=False)
        fig.suptitle(f"{dataset}: top-1 per epoch, mean over seeds (band: ± std)", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, out / f"curves-{_file(dataset)}.png", plt))

        # Bar chart of the table: groups = rows, bars = methods, error bars = std; paper numbers as black ticks.
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) * max(1, len(table.methods)) / 2), 3.8))
        width = 0.8 / max(1, len(table.methods))
        for j, method in enumerate(table.methods):
            xs = [i + (j - (len(table.methods) - 1) / 2) * width for i in range(len(rows))]
            stats = [c.get(method) for _, c in rows]
            ax.bar(xs, [s.mean if s else 0 for s in stats], width, yerr=[(s.std or 0) if s else 0 for s in stats],
                   capsize=2, label=labels[method])
            for x, (key, _) in zip(xs, rows):
                p = paper_value(paper, key, axes, method)
                if p is not None:
                    ax.plot([x - width / 2, x + width / 2], [p, p], color="black", lw=2)
        ax.set_xticks(range(len(rows)), ["/".join(k[1:]) or dataset for k, _ in rows], rotation=20, ha="right",
                      fontsize=8)
        lows = [s.mean - (s.std or 0) for _, c in rows for s in c.values() if s.n]
        if lows:
            ax.set_ylim(max(0.0, min(lows) - 5), None)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{dataset}: top-1 by method (mean ± std over seeds" + ("; black: paper)" if paper else ")"))
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, out / f"bars-{_file(dataset)}.png", plt))

    # Ablations: a numeric swept axis (e.g. num_patches) on x, one line per (dataset, model, method).
    for a_index, axis in enumerate(axes):
        if axis in ROW_AXES:
            continue
        values = sorted({k[a_index] for k, _ in table.rows if k[a_index] != "-"},
                        key=lambda v: float(v) if _numeric([v]) else 0)
        if len(values) < 2 or _numeric(values) is None:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        lines: dict[tuple[str, ...], list[tuple[float, Stat]]] = {}
        for key, cells in table.rows:
            if key[a_index] == "-":
                continue
            for method, stat in cells.items():
                other = tuple(v for i, v in enumerate(key) if i != a_index)
                lines.setdefault((*other, method), []).append((float(key[a_index]), stat))
        for name, points in lines.items():
            points.sort()
            ax.errorbar([x for x, _ in points], [s.mean for _, s in points], yerr=[s.std or 0 for _, s in points],
                        marker="o", capsize=3, label=" / ".join((*name[:-1], labels[name[-1]])))
        ax.set_xlabel(axis)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"top-1 vs {axis} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out / f"ablation-{_file(axis)}.png", plt))
    return written


def _file(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    # bbox "tight": a figure legend placed beside the panels is inside the image, not cut off.
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ paired comparisons
def comparisons() -> list[tuple[str, str, str]]:
    """(minuend, subtrahend, what the difference isolates), as the methods declare them: every method against the
    baseline, then each method's own comparisons (e.g. a control's)."""
    methods = registry.methods()
    return [(m.name, registry.BASELINE, f"{m.label} vs baseline") for m in methods if m.name != registry.BASELINE] + [
        (m.name, other, what) for m in methods for other, what in m.comparisons]


def comparisons_for(methods: Iterable[str], bases: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """The paired comparisons to show for these method labels (a comparison is shown when both methods ran): the
    declared ones, then every variant (a label that is no method name, e.g. ``attentive-cutmix-mass``, an arm of
    method ``bases[label]`` with other options).

    A variant is compared with its own method (``saliencymix-shuffled`` vs SaliencyMix: what the changed option
    does, e.g. the shuffled-guidance control), with what its method is declared to be compared with (vs CutMix), and,
    when its method is one of the cell methods marked ``variant_reference`` (or it is unknown), with each of those
    (vs random cells and vs Attentive CutMix).
    """
    methods, bases = list(methods), dict(bases or {})
    references = [m.name for m in registry.methods() if m.variant_reference and m.name in methods]
    out = [c for c in comparisons() if c[0] in methods and c[1] in methods]
    for variant in (m for m in methods if m not in registry.names()):
        base = bases.get(variant)
        others = [base] if base in methods else []
        others += [other for name, other, _ in comparisons() if name == base and other != registry.BASELINE]
        others += references if base is None or base in references else []
        out += [(variant, other, f"{variant} vs {registry.get(other).label}")
                for other in dict.fromkeys(others) if other in methods]
    return out


def _by_row_method_seed(runs: list[dict[str, Any]], key: str) -> dict[tuple[str, ...], dict[str, dict[int, float]]]:
    done = [r for r in runs if r.get("status") == "finished"]
    axes = row_axes_of(done)
    out: dict[tuple[str, ...], dict[str, dict[int, float]]] = {}
    for run in done:
        value = run.get(key) if key in ("top1", "best_top1") else _last(run.get("curve") or [], key)
        if value is None:
            continue
        row = tuple(_label(run["labels"].get(a)) for a in axes)
        out.setdefault(row, {}).setdefault(_label(run["labels"]["method"]), {})[int(run["labels"]["seed"])] = value
    return out


def _last(curve: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in curve if row.get(key) is not None]
    return values[-1] if values else None


def paired_comparisons(runs: list[dict[str, Any]], metric: str = "top1") -> dict[
        tuple[str, ...], list[tuple[str, str, str, PairedDifference | None]]]:
    """Per row: ``(minuend, subtrahend, what it isolates, paired difference or None)`` of each comparison shown."""
    bases = {_label(r["labels"]["method"]): r["config"]["method"] for r in runs if "method" in r.get("config", {})}
    return {row: [(a, b, what, paired_difference(methods[a], methods[b]))
                  for a, b, what in comparisons_for(methods, bases)]
            for row, methods in _by_row_method_seed(runs, metric).items()}


def paired_markdown(runs: list[dict[str, Any]], metric: str = "top1") -> str:
    """Per row: each comparison's paired difference over seeds with its 95% t-interval, then each method's
    train/held-out gap, final held-out cross-entropy, and whether held-out top-1 was flat over the last fifth."""
    held = _by_row_method_seed(runs, metric)
    train = _by_row_method_seed(runs, "train_top1")
    loss = _by_row_method_seed(runs, "eval_loss")
    lines = []
    compared = paired_comparisons(runs, metric)
    for row, methods in held.items():
        lines += [f"### {' / '.join(row)}", "",
                  "| comparison | difference in top-1 (points), 95% CI over paired seeds |", "|---|---:|"]
        for _, _, what, diff in compared[row]:
            lines.append(f"| {what} | {diff} |" if diff is not None else f"| {what} | no common seed |")
        lines += ["", "| method | held-out top-1 | train top-1 (un-augmented) | gap | held-out loss | "
                      "held-out range, last fifth |", "|---|---:|---:|---:|---:|---:|"]
        labels = method_labels(methods)
        for method, seeds in methods.items():
            tr = train.get(row, {}).get(method, {})
            gap = mean_std(tr[s] - seeds[s] for s in seeds if s in tr)
            ce = loss.get(row, {}).get(method, {})
            lines.append(f"| {labels[method]} | {_fmt(mean_std(seeds.values()))} | {_fmt(mean_std(tr.values()))} | "
                         f"{_fmt(gap)} | {_fmt(mean_std(ce.values()))} | {_tail_range(runs, row, method)} |")
        lines.append("")
    return "\n".join(lines)


def _tail_range(runs: list[dict[str, Any]], row: tuple[str, ...], method: str) -> str:
    """Min and max of the seed-mean held-out curve over the last fifth of the epochs (convergence check)."""
    done = [r for r in runs if r.get("status") == "finished"]
    axes = row_axes_of(done)
    members = [r for r in done if tuple(_label(r["labels"].get(a)) for a in axes) == row
               and _label(r["labels"]["method"]) == method]
    epochs, mean, _ = _curve(members)
    if not epochs:
        return ""
    start = epochs[-1] - max(1, epochs[-1] // 5)
    tail = [m for e, m in zip(epochs, mean) if e > start]
    return f"{min(tail):.2f}–{max(tail):.2f} (epochs {start + 1}–{epochs[-1]})"


# ------------------------------------------------------------------------------------------ against the baseline
@dataclass
class MethodSummary:
    """One method (a grid label) of one row: held-out and train top-1 over seeds, their gap, and its paired
    difference from the baseline (None for the baseline itself, or without a common seed)."""

    method: str
    held_out: Stat
    train: Stat
    gap: Stat
    vs_baseline: PairedDifference | None


def method_label(method: str) -> str:
    """A method's display label (a grid label that is no method name is its own label)."""
    return registry.get(method).label if method in registry.names() else method


def method_labels(methods: Iterable[str]) -> dict[str, str]:
    """Grid method label -> what a table or legend shows: ``method_label``, unless two would read the same (a grid
    label spelled like another method's display label); those keep their grid labels, which are distinct."""
    labels = {m: method_label(m) for m in methods}
    counts = Counter(labels.values())
    return {m: label if counts[label] == 1 else m for m, label in labels.items()}


def baseline_summary(runs: list[dict[str, Any]], metric: str = "top1") -> dict[tuple[str, ...], list[MethodSummary]]:
    """Per row: each method's held-out and train top-1, train - held-out gap, and paired difference from the
    baseline, seed by seed."""
    held, train = _by_row_method_seed(runs, metric), _by_row_method_seed(runs, "train_top1")
    out: dict[tuple[str, ...], list[MethodSummary]] = {}
    for row, methods in held.items():
        base = methods.get(registry.BASELINE)
        for method, seeds in methods.items():
            tr = train.get(row, {}).get(method, {})
            diff = paired_difference(seeds, base) if base is not None and method != registry.BASELINE else None
            out.setdefault(row, []).append(MethodSummary(method, mean_std(seeds.values()), mean_std(tr.values()),
                                                         mean_std(tr[s] - seeds[s] for s in seeds if s in tr), diff))
    return out


def _num(stat: Stat, sign: bool = False) -> str:
    if stat.n == 0:
        return "—"
    mean = f"{stat.mean:+.1f}" if sign else f"{stat.mean:.1f}"
    return mean if stat.std is None else f"{mean} ± {stat.std:.1f}"


def baseline_markdown(summary: list[MethodSummary]) -> str:
    """A Markdown table: held-out top-1 (mean ± std over seeds), paired Δ vs the baseline and its 95% interval,
    train top-1 and the train - held-out gap."""
    labels = method_labels(s.method for s in summary)
    lines = ["| Method | Held-out top-1 (%) | Δ vs baseline, paired (pts) | 95% CI of Δ | Train top-1 (%) "
             "| Train − held-out |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        d = s.vs_baseline
        delta = "—" if d is None else f"{d.mean:+.1f}" + ("" if d.std is None else f" ± {d.std:.1f}") + f" (n={d.n})"
        ci = "—" if d is None or d.low is None else f"[{d.low:+.1f}, {d.high:+.1f}]"
        train = "—" if s.train.n == 0 else f"{s.train.mean:.1f}"
        lines.append(f"| {labels[s.method]} | {_num(s.held_out)} | {delta} | {ci} | {train} | "
                     f"{'—' if s.gap.n == 0 else f'{s.gap.mean:+.1f}'} |")
    return "\n".join(lines)
