"""``models/EVALUATION.md`` and the README's accuracy table, from the summaries."""

from __future__ import annotations

from collections.abc import Mapping

from training.evaluation.scoring import (
    LARGE_ERROR_PERCENT,
    METHOD_LABELS,
    METHODS,
    SCAR_NETWORKS,
    SHORT_LABELS,
)
from training.evaluation.summary import (
    CHALLENGE_WINNER,
    FIELD_LABELS,
    FIELDS,
    MEDIAN_CI_LEVEL,
    PARITY_DSC,
    PARITY_SCAR_PERCENT,
    TARGET_METHODS,
    TEST_SET_LABELS,
    fmt_number,
    target_rows,
)


def _verdict(row: dict) -> str:
    if row["target"].startswith("reported"):
        return ""
    return "met" if row["met"] else "**not met**"


def _targets_table(summaries: Mapping[str, dict], targets: Mapping[str, Mapping]) -> str:
    lines = [f"| test set | method | figure | median | {MEDIAN_CI_LEVEL * 100:g} % CI | target | |",
             "|---|---|---|---|---|---|---|"]
    for r in target_rows(summaries, targets):
        if "of" in r:
            measured, ci = f"{r['median']} of {r['of']}", ""
        elif r["ci"] is None:
            measured, ci = fmt_number(r["median"]), ""
        else:
            low, high = r["ci"]
            measured, ci = fmt_number(r["median"]), f"{fmt_number(low)}-{fmt_number(high)}"
        lines.append(f"| {r['test_set']} | {SHORT_LABELS[r['method']]} | "
                     f"{FIELD_LABELS.get(r['field'], r['field'])} | {measured} | {ci} | "
                     f"{r['target']} | {_verdict(r)} |")
    return "\n".join(lines)


def _side_by_side(summaries: Mapping[str, dict]) -> str:
    names = list(summaries)
    header = ("| method | figure | " + " | ".join(names) + " |\n|---|---|"
              + "---|" * len(names))
    rows = []
    for method in METHODS:
        for field in ("myocardium_dsc", "scar_dsc", "abs_scar_percent_error", "mvo_dsc"):
            if method in ("4sd", "fwhm", "enet-true-myocardium") and field == "myocardium_dsc":
                continue
            if method in ("4sd", "fwhm") and field == "mvo_dsc":
                continue
            cells = []
            for name in names:
                r = summaries[name]["methods"][method][field]
                cells.append(f"{fmt_number(r['median'])} ({fmt_number(r['median_ci'][0])}-"
                             f"{fmt_number(r['median_ci'][1])})")
            rows.append(f"| {SHORT_LABELS[method]} | {FIELD_LABELS[field]} | "
                        + " | ".join(cells) + " |")
    return header + "\n" + "\n".join(rows)


def _parity_section(context: dict) -> str:
    rows = context.get("precision_parity")
    if not rows:
        return ""
    lines = ["| int8 networks | test set | method | series | myocardium DSC fp32 / int8 "
             "| scar DSC fp32 / int8 | MVO DSC fp32 / int8 | median scar % fp32 / int8 "
             "| a series' scar % moved, median (max) | parity |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    def pair(r: dict, field: str) -> str:
        return f"{fmt_number(r[field]['fp32'])} / {fmt_number(r[field]['int8'])}"

    for r in rows:
        lines.append(f"| {r.get('int8_networks', 'both U-Nets')} | {r['test_set']} | "
                     f"{SHORT_LABELS[r['method']]} | {r['series']} | "
                     f"{pair(r, 'myocardium_dsc')} | {pair(r, 'scar_dsc')} | "
                     f"{pair(r, 'mvo_dsc')} | {pair(r, 'scar_percent')} | "
                     f"{fmt_number(r['scar_percent_change_median'], 2)} "
                     f"({fmt_number(r['scar_percent_change_max'], 2)}) | "
                     f"{'met' if r['met'] else '**not met**'} |")
    chosen = context.get("int8_pipelines") or {}
    names = {"myocardium_unet": "the myocardium U-Net", "scar_unet": "the scar U-Net"}
    if chosen:
        verdict = ("`MODEL_PRECISION=auto` runs in int8 " + "; ".join(
            f"{' and '.join(names.get(t, t) for t in tasks)} in {SHORT_LABELS[method]}"
            for method, tasks in sorted(chosen.items()))
            + ", where that held on every test set; every other network and pipeline "
              "runs float32 (`MODEL_PRECISION=int8` runs every int8 file)")
    else:
        verdict = ("int8 did not hold on every test set for any pipeline, so "
                   "`MODEL_PRECISION=auto` runs float32 (`MODEL_PRECISION=int8` still runs "
                   "the int8 files)")
    return f"""## int8 against float32
The U-Nets also ship as static int8 (onnxruntime QDQ, activation ranges from validation
inputs, never a test set). Every test set was run with both U-Nets in int8, and with the
myocardium U-Net alone (the candidates chosen on validation series by `python -m
training.studies.int8_study`, docs/results/int8_study.json), with the same thresholds and
intervals; a pipeline may run int8 by default only where, on every test set, the median
scar DSC moves by at most {PARITY_DSC:g} either way, the median myocardium DSC drops by at
most {PARITY_DSC:g} and the median scar % moves by at most {PARITY_SCAR_PERCENT:g} points
(issue 54). {verdict}. Their speed is in BENCHMARKS.md.

""" + "\n".join(lines) + "\n"


def _challenge_table(summaries: Mapping[str, dict]) -> str:
    """Means over cases, as the challenge ranks (MVO: 1 where neither side has any)."""
    names = list(summaries)
    lines = ["| method | figure | " + " | ".join(names) + " | challenge winner |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for method in TARGET_METHODS:
        for key, label in (("myocardium_dsc_mean", "myocardium DSC"),
                           ("scar_dsc_mean", "scar DSC (cases with scar)"),
                           ("mvo_case_dsc_mean", "MVO DSC (all cases)")):
            field = key.removesuffix("_mean")
            cells = [fmt_number(summaries[n]["methods"][method][key]) for n in names]
            lines.append(f"| {SHORT_LABELS[method]} | {label} | " + " | ".join(cells)
                         + f" | {fmt_number(CHALLENGE_WINNER[field])} |")
    return "\n".join(lines) + ("\n\nThe winner's figures are on the challenge's own 50 test "
                               "cases, not on this split's 20: a mark, not a paired comparison.")


def _contrast_sentence(methods: Mapping[str, dict]) -> str:
    """How often the image reading of the contrast (``service.pipeline.contrast``) was right."""
    parts = []
    for method in TARGET_METHODS:
        right, n = methods[method].get("contrast_read_right", (0, 0))
        if n:
            parts.append(f"{right} of {n} on the {SHORT_LABELS[method]}'s myocardium")
    return ("" if not parts else
            "The contrast read from the image (`service.pipeline.contrast`, as for a series whose "
            "headers do not name it) was right on " + " and ".join(parts) + ".")


def accuracy_table(summaries: Mapping[str, dict]) -> str:
    """The README's short table: the default pipeline per test set, medians (95 % CI)."""
    def cell(r: dict, digits: int = 3) -> str:
        return (f"{fmt_number(r['median'], digits)} ({fmt_number(r['median_ci'][0], digits)}-"
                f"{fmt_number(r['median_ci'][1], digits)})")

    lines = ["| test set | series | myocardium DSC | scar DSC | abs scar-% error (points) "
             "| interval holds the expert's scar % (median width) | marked for review |",
             "|---|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        m = summary["methods"]["cascade-unet"]
        iv = m.get("interval")
        coverage = ("n/a" if not iv else f"{iv['covered']} of {iv['series']} "
                    f"({fmt_number(iv['median_width'], 1)} points)")
        lines.append(f"| {TEST_SET_LABELS.get(name, name)} | {m['n_series']} | "
                     f"{cell(m['myocardium_dsc'])} | {cell(m['scar_dsc'])} | "
                     f"{cell(m['abs_scar_percent_error'], 2)} | {coverage} | "
                     f"{m['review']} of {m['n_series']} |")
    return ("\n".join(lines)
            + "\n\nCascade U-Net (the default pipeline); scar DSC on series with scar.")


def _test_set_section(name: str, summary: dict, count: int) -> str:
    m = summary["methods"]
    header = ("| method | scar DSC | sensitivity | specificity | accuracy | abs scar-% error "
              "| myocardium DSC | MVO DSC | scar called on scar-free series |\n"
              "|---|---|---|---|---|---|---|---|---|")
    rows = []
    for method in METHODS:
        r = m[method]
        cells = [f"{fmt_number(r[f]['median'], 3 if f != 'abs_scar_percent_error' else 2)} "
                 f"({fmt_number(r[f]['iqr'], 3 if f != 'abs_scar_percent_error' else 2)})"
                 for f in FIELDS]
        rows.append(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) +
                    f" | {r['scar_free_series_with_scar_called']}/{r['scar_free_series']} |")
    tests = "\n".join(
        f"| {METHOD_LABELS[c['a']]} vs {METHOD_LABELS[c['b']]} | {c['field']} | {c['n']} | "
        f"{fmt_number(c['median_a'])} vs {fmt_number(c['median_b'])} | "
        f"{fmt_number(c['p_value'], 4)} |"
        for c in summary["comparisons"])
    on_true_myocardium = ("4sd", "fwhm")
    subgroup_header = ("| series with scar | n | "
                       + " | ".join(SHORT_LABELS[m] + "*" * (m in on_true_myocardium)
                                    for m in METHODS)
                       + " |\n|---|---|" + "---|" * len(METHODS))
    subgroups = "\n".join(
        f"| {group} | {g['n_series']} | " + " | ".join(fmt_number(g[m]) for m in METHODS) + " |"
        for group, g in summary["subgroups"].items())
    return f"""## {TEST_SET_LABELS.get(name, name)}
{count} series, {m['cascade-unet']['n_series'] - m['cascade-unet']['scar_free_series']} with scar.
Median (IQR) per series. {_contrast_sentence(m)}

{header}
{chr(10).join(rows)}

Wilcoxon signed-rank tests (paired by series, two-sided):

| comparison | figure | n | medians | p |
|---|---|---|---|---|
{tests}

Scar DSC by kind of series (median; * = threshold inside the true myocardium):

{subgroup_header}
{subgroups}

![box plots, {name}](evaluation/boxplots_{name}.png)
![Bland-Altman, {name}](evaluation/bland_altman_{name}.png)
"""


def _worst_cases_section(context: dict) -> str:
    """Where the figure of the worst validation cases is: real EMIDEC slices stay out of the
    repository, so it is named, not embedded."""
    cases = context.get("worst_cases") or []
    if not cases:
        return ""
    if context.get("cross_validation"):
        return f"""## The worst five out-of-fold cases, before and after the ring constraint
The cascade's out-of-fold cases (as acquired) with the lowest myocardium DSC without the ring
constraint, worst first: {", ".join(f"`{c}`" for c in cases)}. The release command draws each
on its slice with the most disagreement (the image, the expert's contours, the cascade without
and with the constraint) into `{context["worst_figure"]}` in its working folder, and never
into `models/`: EMIDEC images may not be committed or redistributed.
"""
    return f"""## The worst five EMIDEC `validation` cases
The cascade on the validation cases (as acquired) with the lowest mean of myocardium and scar
DSC, worst first: {", ".join(f"`{c}`" for c in cases)}. The release command draws each on its
slice with the most disagreement (the image, the expert's contours, the network's) into
`{context["worst_figure"]}` in its working folder, and never into `models/`: EMIDEC
images may not be committed or redistributed. Validation, not test: these are the cases the
release was chosen on, shown so that whoever trains sees how it fails.
"""


# The out-of-fold groups every variant is chosen on (training/choices.py): each case as
# acquired, darkened, and shifted to another centre's look.
OOF_GROUPS = {"bright-blood": "bright", "dark-blood": "darkened", "shifted": "shifted"}
VARIANT_FIGURES = ("cascade myo DSC", "cascade scar DSC", "abs scar-% error", "myo DSC < 0.70",
                   "open slices (expert)", "P2 myo DSC", "P2 scar DSC")


def _variant_cells(summaries: Mapping[str, dict]) -> str:
    cells = []
    for contrast in OOF_GROUPS:
        if contrast not in summaries:  # a study run on some groups only (TTA)
            cells += ["n/a"] * len(VARIANT_FIGURES)
            continue
        m = summaries[contrast]["methods"]
        c, p2 = m["cascade-unet"], m["enet"]
        opened = c.get("open_slices") or {"method": "n/a", "truth": "n/a"}
        cells += [fmt_number(c["myocardium_dsc"]["median"]), fmt_number(c["scar_dsc"]["median"]),
                  fmt_number(c["abs_scar_percent_error"]["median"], 2),
                  f"{c['myocardium_failures'][0]}/{c['myocardium_failures'][1]}",
                  f"{opened['method']} ({opened['truth']})",
                  fmt_number(p2["myocardium_dsc"]["median"]), fmt_number(p2["scar_dsc"]["median"])]
    return " | ".join(cells)


def _tta_cost_text(tta: Mapping, cost: Mapping | None) -> str:
    """What test-time augmentation would buy per 100 ms (issue 52, point 5), bounded from
    the ensemble benchmark: eight runs of every U-Net member a slice are more network runs
    than five members of each, so TTA costs at least what those cost over 0.3.2."""
    if not tta or not cost:
        return ""
    rows = {r["candidate"]: r for r in cost["rows"]}
    five, base = rows.get("both x5, float32"), rows.get("0.3.2 as shipped")
    if five is None or base is None:
        return ""
    extra_ms = five["p50_ms"] - base["p50_ms"]
    gain = tta["score"] - tta["without"]
    return (f"\nTTA runs each U-Net member on the eight symmetries of every slice: more "
            f"network runs than five members of each, which cost {five['ratio_to_0_3_2']:.2f}x "
            f"0.3.2's p50 in `analyse` ({extra_ms:.0f} ms more, "
            f"`benchmarks/results/ensemble_cost.json`, {cost['date']}), outside the 1.5x "
            f"budget. "
            + (f"Its out-of-fold score gain, {gain:+.4f}, is at most "
               f"{gain / extra_ms * 100:+.4f} per 100 ms.\n" if gain > 0 else
               f"Its out-of-fold score changes by {gain:+.4f}: nothing to buy.\n"))


def _cross_validation_section(context: dict) -> str:
    """The out-of-fold figures of the 80 cases, the ring constraint and TTA, side by side."""
    cv = context.get("cross_validation")
    if not cv:
        return ""
    head = ("| variant | " + " | ".join(
        f"{c}: {f}" for c in OOF_GROUPS.values() for f in VARIANT_FIGURES)
        + " | score |\n|---|" + "---|" * (len(OOF_GROUPS) * len(VARIANT_FIGURES) + 1))
    rows = [f"| {name}{' (chosen)' if v['complete_ring'] == cv['chosen_ring'] else ''} | "
            f"{_variant_cells(v['summaries'])} | {v['score']:.4f} |"
            for name, v in cv["variants"].items()]
    tta = cv.get("tta") or {}
    if tta:
        rows.append(f"| {tta['variant']} + TTA (8 symmetries, not shipped; as acquired and "
                    f"shifted only, score {tta['score']:.4f} against {tta['without']:.4f} "
                    "without) | "
                    f"{_variant_cells(tta['summaries'])} | |")
    tta_cost = _tta_cost_text(tta, cv.get("ensemble_cost"))
    rings = cv.get("crop_ring_choice") or {}
    ring_rows = "\n".join(
        f"| {method} | {r['first_ring_score']:.4f} (threshold {r['first_ring_threshold']:g}) "
        f"| {r['cascade_ring_score']:.4f} (threshold {r['cascade_ring_threshold']:g}) "
        f"| {'the cascade' if r['taken'] else 'the myocardium U-Net'} |"
        for method, r in rings.items())
    ring_table = "" if not rings else f"""
Each ENet pipeline on the myocardium U-Net's ring or on the one the cascade's scar U-Net
redraws (its crop placed and masked by it; the manifest's `ring`), by that pipeline's own
score, its threshold chosen on each ring:

| pipeline | first ring: score | the cascade's ring: score | ring shipped |
|---|---|---|---|
{ring_rows}
"""
    oof = cv["out_of_fold"]
    enets = ("the ENets too, each fold's trained on crops from the Hough search near the "
             "heart" if "enet_p2" in cv.get("fold_tasks", ()) else
             "the ENets are the earlier release's, trained on `train`: for them only the 10 "
             "`validation` cases are out of fold")
    return f"""## Out of fold: the 80 EMIDEC `train` + `validation` cases
Each case scored by the networks of the one fold that never saw it ({enets}).
Every choice of this release was made here: each scar network's threshold, the ring
constraint (`service/pipeline/shape.py`) and test-time augmentation. The score is the mean
over the three groups (as acquired, darkened, and shifted to another centre's look:
`training/data/appearance.py`) of the cascade's median myocardium and scar DSC; of equal
scores the simpler variant wins. Open slices: slices whose myocardium encloses no cavity,
summed over the cases (the expert's in brackets).

{head}
{chr(10).join(rows)}
{tta_cost}{ring_table}
The chosen variant, every figure (median and {MEDIAN_CI_LEVEL * 100:g} % CI):

{_side_by_side(oof)}

![every case](evaluation/strip_cases.png)
![learning curves of every fold](evaluation/curves_folds.png)

Per-case out-of-fold numbers: `evaluation/scores_out_of_fold.csv`.
"""


def review_choice_text(choice: dict | None) -> str:
    """How the review width was chosen, where it was chosen out of fold (a clause)."""
    if not choice:
        return ""
    return (f" (chosen out of fold: on the {choice['series']} held-out series as given, each "
            f"judged by the interval calibrated without its fold, it sends "
            f"{choice['review_share']:.0%} to review and catches {choice['large_caught']} of "
            f"their {choice['large_errors']} scar-% errors over {LARGE_ERROR_PERCENT:g} "
            f"points; {choice['large_share']:.0%} of them have such an error)")


def _trust_section(summaries: Mapping[str, dict], context: dict) -> str:
    """The interval, the review flag against the large errors, and the gate's rates."""
    lines = ["| test set | pipeline | interval holds the expert's scar % | median width "
             "(points) | review | review & error > 5 | ok & error > 5 | review & error <= 5 "
             "| ok & error <= 5 | refused | contrast flagged |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        for method in ("cascade-unet", "enet"):
            m = summary["methods"][method]
            iv, t = m.get("interval"), m["review_table"]
            cover = "n/a" if not iv else f"{iv['covered']}/{iv['series']}"
            width = "n/a" if not iv else fmt_number(iv["median_width"], 1)
            lines.append(
                f"| {TEST_SET_LABELS.get(name, name)} | {SHORT_LABELS[method]} | {cover} | "
                f"{width} | {m['review']}/{m['n_series']} | {t['review_large']} | "
                f"{t['ok_large']} | {t['review_small']} | {t['ok_small']} | "
                f"{m['refused']}/{m['n_series']} | {m['contrast_flagged']}/{m['n_series']} |")
    negatives = context.get("rendered_negatives") or {}
    gate = "\n".join(
        f"| {sequence} | {g['series']} | {g['no_ring']} | {g['refused']} | {g['flagged']} | "
        f"{(let_through := g['series'] - g['refused'] - g['flagged'])} | "
        f"{g['ring_flagged']} | {let_through - g['ring_flagged']} |"
        for sequence, g in negatives.items())
    calibration = context.get("interval_calibration") or {}
    cal = calibration.get("cascade-unet")
    how = "" if not cal else (
        f"The cascade's interval sums the spread terms {', '.join(cal['terms'])} "
        f"(`service/pipeline/uncertainty.py`), plus {cal['floor_percent']:g} points, times "
        f"{cal['scale']:.2f}: the largest of the split-conformal 95 % quantiles of the "
        f"calibration groups ("
        + ", ".join(f"{g} {n}" for g, n in cal["groups"].items())
        + " series)"
        + ("" if cal.get("unlike_scale") is None else
           f"; a series unlike the scans trained on takes {cal['unlike_scale']:.2f}, the "
           f"quantile of {cal['unlike_series']} such out-of-fold series")
        + f". Wider than {cal['review_width_percent']:.1f} points it sends the "
        "result to review" + review_choice_text(cal.get("review_choice")) + ".")
    return f"""## Trust: the interval, the review flag and the LGE gate
{how} Review also comes from a gap in the myocardium or a contrast the gate doubts; a
large error is one over 5 points of scar %; refused series have no result and are left out
of the review columns.

{chr(10).join(lines)}

The gate on the test seed's phantom hearts rendered in other sequences with LGE headers
(`training/data/phantoms/sequences.py`): refused (no LV ring, or a blood pool far darker
than the myocardium), flagged for review with a reason naming the contrast, or let through
by the contrast rules; of those, the ones the service still sends to review because no
slice shows a closed LV ring of an LV's size, and the rest, which come back `ok`. The
thresholds and the classifier were set on EMIDEC `train`/`validation` and rendered phantoms
of other seeds (`docs/results/gate_flag_study.json`).

{GATE_HEADER}
{gate}
"""


GATE_HEADER = ("| rendered sequence | series | no LV ring | refused | flagged | let through | "
               "of them, no closed ring (review) | ok |\n|---|---|---|---|---|---|---|---|")


def _curves_lines(context: dict) -> str:
    if context.get("cross_validation"):
        return "![both U-Nets, every fold](evaluation/curves_folds.png)"
    return ("![myocardium U-Net](evaluation/curves_myocardium_unet.png)\n"
            "![scar U-Net](evaluation/curves_scar_unet.png)")


NETWORK_NAMES = {"myocardium_unet": "the myocardium U-Net", "scar_unet": "the scar U-Net",
                 "enet_p2": "the Protocol 2 ENet", "enet_p1": "the Protocol 1 ENet"}


def _members_text(cv: Mapping) -> str:
    """Which folds' networks ship (``crossval.SHIPPED_MEMBERS``): each the mean of its
    members' probabilities."""
    members = cv.get("shipped_members")
    if not members:
        return f"the shipped networks are the mean of the {cv['folds']} folds"
    parts = [NETWORK_NAMES.get(task, task) + " as "
             + ("fold 0's network" if n == 1 else f"the mean of folds 0-{n - 1}")
             for task, n in members.items()]
    return "what ships: " + "; ".join(parts) + " (a mean of the members' probabilities)"


def markdown_report(summaries: Mapping[str, dict], targets: Mapping[str, Mapping],
                    context: dict) -> str:
    """``models/EVALUATION.md``: the targets, every test set side by side, then each in full."""
    timing = "\n".join(f"| {k} | {v:.1f} |" for k, v in context["minutes"].items())
    thresholds = ", ".join(f"{METHOD_LABELS[SCAR_NETWORKS[task]]} {t:g}"
                           for task, t in context["thresholds"].items())
    counts = context["test_sets"]
    real = context.get("emidec")
    cv = (real or {}).get("cross_validation")
    if cv:
        real_text = (f" EMIDEC `train` + `validation` ({cv['cases']} cases) in {cv['folds']} "
                     f"folds by patient (`{cv['file']}`): each fold's U-Nets learned from the "
                     f"other folds' cases (each as acquired and darkened, "
                     f"{real['copies_per_case_and_contrast']} copies per contrast at nominal "
                     f"spacings of {real['train_spacing_range_mm'][0]:g}-"
                     f"{real['train_spacing_range_mm'][1]:g} mm), and every choice was made on "
                     f"the out-of-fold predictions (below); {_members_text(cv)}. The EMIDEC "
                     f"test cases are read at a nominal "
                     f"{real['nominal_spacing_mm']:g} mm.")
    elif real:
        real_text = (f" EMIDEC `train` ({real['train_cases']} cases, each as acquired and "
                     f"darkened, {real['copies_per_case_and_contrast']} copies per contrast at "
                     f"nominal spacings of {real['train_spacing_range_mm'][0]:g}-"
                     f"{real['train_spacing_range_mm'][1]:g} mm) and EMIDEC `validation` "
                     f"({real['validation_cases']} cases, both contrasts) took part too; the "
                     f"EMIDEC test cases are read at a nominal {real['nominal_spacing_mm']:g} mm.")
    else:
        real_text = ""
    sections = "\n".join(_test_set_section(name, summary, counts[name])
                          for name, summary in summaries.items())
    return f"""# Evaluation on held-out test sets

**Research use only: not a medical device, not for clinical use.**

Made by `{context['command']}` on {context['date']} ({context['machine']}).
Test sets, never used in training or model selection:
{chr(10).join(f"- {TEST_SET_LABELS.get(n, n)}: {c} series" for n, c in counts.items())}

Training used {context['train_series']} and validation {context['validation_series']} phantom
series of seed {context['train_seed']} (the phantom test set is seed {context['test_seed']}).
{real_text}
{("**Note on this release.** " + context["note"] + chr(10)) if context.get("note") else ""}
Each series went through the service's own pipeline code with the exported ONNX models in
onnxruntime, each scar network's probability thresholded where it gave the best mean over
source groups (phantoms, EMIDEC as acquired, EMIDEC darkened) of the median scar DSC on the
validation series ({thresholds}; the model cards list every threshold tried).

Per-series figures (volume over all slices). Scar DSC and sensitivity are over series with
scar; specificity and accuracy inside the true (expert) myocardium; scar % is scar over
myocardium of the method's own masks; scar is infarct plus microvascular obstruction. The
networks use the myocardium they predict; the 4-SD and FWHM references threshold inside the
**expert** myocardium (remote region: the darkest of six sectors per slice; FWHM peak: 99th
percentile of the series' myocardium), as they would be run on expert contours.
Intervals are distribution-free {MEDIAN_CI_LEVEL * 100:g} % intervals of the median (two order
statistics, ranks from a Binomial(n, 1/2)): a target inside one is one that test set cannot
tell apart from the measured median, met or not.

## Targets (cascade U-Net and ENet P2)
MVO (microvascular obstruction) is part of the scar, as EMIDEC scores it; its DSC is over the
cases that have it, and "none called" means at most 0.5 % of the myocardium.

{_targets_table(summaries, targets)}

## Every test set side by side: median ({MEDIAN_CI_LEVEL * 100:g} % CI)
{_side_by_side(summaries)}

## Beside the EMIDEC challenge (means over cases)
{_challenge_table(summaries)}

{_cross_validation_section(context)}
{_trust_section(summaries, context)}
{_parity_section(context)}
{_worst_cases_section(context)}
{sections}
## Training curves
{_curves_lines(context)}
![ENet P2](evaluation/curves_enet_p2.png)
![ENet P1](evaluation/curves_enet_p1.png)

## Time (minutes, {context['machine']})
Each stage as it was done (a resumed command keeps the times of the stages it
reused; training time is the run's own clock, which adds up across resumes),
so the total is the cost of the command from scratch.

| stage | minutes |
|---|---|
{timing}

Per-series numbers: `evaluation/scores.csv` (column `test_set`).
"""
