"""Figures of an evaluation: box plots, Bland-Altman plots, the worst validation cases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.evaluation.scoring import METHODS, NETWORK_METHODS, SHORT_LABELS, SeriesScore
from training.evaluation.summary import TARGET_METHODS, method_values


def box_plots(scores: Sequence[SeriesScore], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("myocardium_dsc", NETWORK_METHODS[:1], "Myocardium DSC (myocardium U-Net)"),
              ("scar_dsc", METHODS, "Scar DSC per series"),
              ("scar_sensitivity", METHODS, "Scar sensitivity"),
              ("scar_specificity", METHODS, "Scar specificity (in true myocardium)"),
              ("abs_scar_percent_error", METHODS, "|scar % error| (percentage points)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
    for ax, (field, methods, title) in zip(axes, panels, strict=True):
        data = [method_values(scores, m, field) for m in methods]
        ax.boxplot(data, tick_labels=[SHORT_LABELS[m] for m in methods], showfliers=True)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)



def bland_altman(scores: Sequence[SeriesScore], path: Path, title: str,
                 methods: Sequence[str] = (*TARGET_METHODS, "fwhm")) -> None:
    """Scar % of each method against the expert's: difference over mean, bias and 95 % limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods), 4.0), sharey=True)
    for ax, method in zip(np.atleast_1d(axes), methods, strict=True):
        rows = [s for s in scores if s.method == method]
        ours = np.array([s.scar_percent for s in rows])
        truth = np.array([s.true_scar_percent for s in rows])
        diff, mean = ours - truth, (ours + truth) / 2
        ax.scatter(mean, diff, s=14, alpha=0.7)
        if diff.size:
            bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
            for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
                ax.axhline(y, color="grey", linestyle=style, linewidth=1)
            ax.set_title(f"{SHORT_LABELS[method]}: bias {bias:+.1f}, limits "
                         f"{bias - 1.96 * sd:+.1f} to {bias + 1.96 * sd:+.1f}", fontsize=9)
        ax.set_xlabel("mean of method and expert scar % ")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("method - expert (percentage points)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _draw_row(row, panels: list, fontsize: int) -> None:
    for ax, (picture, title) in zip(row, panels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=fontsize)
        ax.axis("off")


def _saved(fig, path: Path, shown: list[str]) -> list[str]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return shown


def worst_validation_cases(sources: Sequence, networks, path: Path, count: int = 5) -> list[str]:
    """The cascade's ``count`` worst validation series as a figure: image, expert, network.

    Worst by the mean of myocardium DSC and (where there is scar) scar DSC;
    each on its slice with the most pixels where expert and network disagree,
    zoomed to the heart and drawn with the service's own overlay colours.
    Returns the series shown, worst first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from service.viewer.overlay import auto_window, heart_box, render_overlay
    from training import metrics
    from training.data.sources import as_source
    from training.evaluation.scoring import network_segmentations

    cases = []
    for source in sources:
        series = as_source(source).read()
        seg = network_segmentations(series, networks)[1]["cascade-unet"]
        scores = [metrics.dice(seg.myocardium, series.true_myocardium)]
        if series.true_scar.any():
            scores.append(metrics.dice(seg.scar, series.true_scar))
        cases.append((float(np.mean(scores)), source.series_id, series, seg))
    cases.sort(key=lambda c: c[0])
    shown = cases[:count]
    fig, axes = plt.subplots(len(shown), 3, figsize=(9, 3 * len(shown)), squeeze=False)
    for row, (score, name, series, seg) in zip(axes, shown, strict=True):
        disagreement = [int((seg.myocardium[k] ^ series.true_myocardium[k]).sum()
                            + (seg.scar[k] ^ series.true_scar[k]).sum())
                        for k in range(len(series.images))]
        k = int(np.argmax(disagreement))
        both = np.stack([seg.myocardium, series.true_myocardium]).any(axis=0)
        y0, x0, y1, x1 = heart_box(both, series.spacing) or (0, 0, *series.images[k].shape)
        crop = np.s_[y0:y1, x0:x1]
        image = np.asarray(series.images[k], np.float32)
        width, level = auto_window(np.asarray(series.images)[:, y0:y1, x0:x1])
        panels = [
            (np.repeat(np.clip((image[crop] - (level - width / 2)) / width, 0, 1)[..., None],
                       3, axis=2), f"{name}, slice {k + 1}"),
            (render_overlay(image[crop], series.true_myocardium[k][crop],
                            series.true_scar[k][crop], width, level, 2,
                            mvo=series.true_obstruction[k][crop]), "expert"),
            (render_overlay(image[crop], seg.myocardium[k][crop], seg.scar[k][crop], width,
                            level, 2, mvo=seg.mvo[k][crop]),
             f"cascade (mean DSC {score:.2f})"),
        ]
        _draw_row(row, panels, fontsize=9)
    return _saved(fig, path, [c[1] for c in shown])


def strip_plot(scores_by_set: dict[str, Sequence[SeriesScore]], path: Path,
               method: str = "cascade-unet",
               fields: Sequence[tuple[str, str]] = (("myocardium_dsc", "myocardium DSC"),
                                                    ("scar_dsc", "scar DSC"),
                                                    ("abs_scar_percent_error",
                                                     "|scar % error| (points)"))) -> None:
    """Every case of every set as a dot (jittered sideways), the median as a bar: a few
    failures set a mean, and a box hides which they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    names = list(scores_by_set)
    fig, axes = plt.subplots(1, len(fields), figsize=(1.3 * len(names) * len(fields) + 2, 4.4))
    for ax, (field, title) in zip(np.atleast_1d(axes), fields, strict=True):
        for i, name in enumerate(names):
            values = method_values(scores_by_set[name], method, field)
            ax.scatter(i + rng.uniform(-0.18, 0.18, values.size), values, s=12, alpha=0.7)
            if values.size:
                median = float(np.median(values))
                ax.plot([i - 0.3, i + 0.3], [median, median], color="black", linewidth=2)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{SHORT_LABELS[method]}: {title}, every case", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def before_after_cases(items: Sequence[tuple], variants: dict[str, object], path: Path,
                       count: int = 5) -> list[str]:
    """The cascade's worst out-of-fold cases, each drawn under every post-processing variant.

    ``items`` are (source, networks by variant name) pairs; worst by the first variant's
    myocardium DSC. Draws real images: call it only for a figure kept out of the repository.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from service.viewer.overlay import auto_window, heart_box, render_overlay
    from training import metrics
    from training.evaluation.scoring import network_segmentations

    first = next(iter(variants))
    cases = []
    for source, by_variant in items:
        series = source.read()
        segs = {v: network_segmentations(series, by_variant[v])[1]["cascade-unet"]
                for v in variants}
        dsc = metrics.dice(segs[first].myocardium, series.true_myocardium)
        cases.append((dsc, source.series_id, series, segs))
    cases.sort(key=lambda c: c[0])
    shown = cases[:count]
    columns = 2 + len(variants)
    fig, axes = plt.subplots(len(shown), columns, figsize=(3 * columns, 3 * len(shown)),
                             squeeze=False)
    for row, (_, name, series, segs) in zip(axes, shown, strict=True):
        k = int(np.argmax([(segs[first].myocardium[j] ^ series.true_myocardium[j]).sum()
                           for j in range(len(series.images))]))
        both = np.stack([series.true_myocardium, *(s.myocardium for s in segs.values())])
        y0, x0, y1, x1 = heart_box(both.any(axis=0), series.spacing) or (
            0, 0, *series.images[k].shape)
        crop = np.s_[y0:y1, x0:x1]
        image = np.asarray(series.images[k], np.float32)
        width, level = auto_window(np.asarray(series.images)[:, y0:y1, x0:x1])
        panels = [(np.repeat(np.clip((image[crop] - (level - width / 2)) / width, 0, 1)[..., None],
                             3, axis=2), f"{name}, slice {k + 1}"),
                  (render_overlay(image[crop], series.true_myocardium[k][crop],
                                  series.true_scar[k][crop], width, level, 2), "expert")]
        for v, seg in segs.items():
            d = metrics.dice(seg.myocardium, series.true_myocardium)
            panels.append((render_overlay(image[crop], seg.myocardium[k][crop],
                                          seg.scar[k][crop], width, level, 2),
                           f"{v} (myo DSC {d:.2f})"))
        _draw_row(row, panels, fontsize=8)
    return _saved(fig, path, [c[1] for c in shown])


def fold_curves(records: dict, path: Path) -> None:
    """Each fold's training loss per epoch and held-out validation DSC where measured, per
    network: where the curves flatten, more steps buy nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(next(iter(records.values())))
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 6.5), squeeze=False)
    for col, task in enumerate(tasks):
        for fold, by_task in sorted(records.items(), key=lambda kv: int(kv[0])):
            # Steps from the network's start: epochs differ in length (U-Nets 100 steps,
            # ENets 125) and restart at 1 in each stage of a joined curve.
            history = by_task[task]["history"]
            axes[0, col].plot([h["steps"] for h in history],
                              [h["loss"] for h in history], label=f"fold {fold}")
            validated = [(h["steps"], h["val_dsc"]) for h in history
                         if h["val_dsc"] is not None]
            if validated:
                axes[1, col].plot(*zip(*validated, strict=True), marker="o", label=f"fold {fold}")
        axes[0, col].set_title(f"{task}: training loss", fontsize=9)
        axes[1, col].set_title(f"{task}: held-out validation DSC (model grid)", fontsize=9)
        for ax in axes[:, col]:
            ax.set_xlabel("training steps")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
