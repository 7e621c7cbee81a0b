"""The HTML a radiologist reads: the viewer of one analysis and the index page.

Self-contained pages (inline CSS and JS, SVG drawn here, images from the
overlay endpoint): nothing is fetched from a CDN, so they work on an
isolated hospital network. Templates are ``service/viewer/web/*.html``
(``string.Template``); every value from a report is HTML-escaped here.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from string import Template

from service import __version__
from service.viewer.bullseye import bullseye_svg, legend_svg

_WEB = resources.files(__package__) / "web"
METHOD_LABELS = {"4sd": "4-SD", "fwhm": "FWHM"}


def _template(name: str) -> Template:
    return Template((_WEB / name).read_text(encoding="utf-8"))


def _num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def _json_for_script(data: dict) -> str:
    """JSON that cannot close its <script> element."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")


def start_slice(slices: list[dict]) -> int:
    """The slice a reader wants first: the most scar, else the most myocardium."""
    if not slices:
        return 0
    return max(range(len(slices)), key=lambda k: (slices[k]["scar_area_mm2"],
                                                 slices[k]["myocardium_area_mm2"], -k))


def _study_date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() \
        else value


def viewer_page(report: dict, window: float, level: float,
                value_range: tuple[float, float], identity: dict | None = None) -> str:
    slices = report["slices"]
    identity = identity or {}
    start = start_slice(slices)
    slice_rows = "".join(
        f'<tr data-slice="{s["index"]}"><td>{s["index"] + 1}</td>'
        f'<td>{_num(s["myocardium_area_mm2"], 0)}</td><td>{_num(s["scar_area_mm2"], 0)}</td>'
        f'<td>{_num(s["scar_percent"])}</td><td>{_num(s.get("mvo_percent", 0.0))}</td></tr>'
        for s in slices)
    method_rows = (f'<tr><td><b>network ({escape(report["pipeline"])})</b></td>'
                   f'<td><b>{_num(report["scar_percent"])}</b></td>'
                   f'<td>{_num(report["scar_volume_ml"], 2)}</td></tr>')
    notes = []
    for key, baseline in report["baselines"].items():
        name = METHOD_LABELS.get(key, key)
        method_rows += (f"<tr><td>{escape(name)}</td><td>{_num(baseline['scar_percent'])}</td>"
                        f"<td>{_num(baseline['scar_volume_ml'], 2)}</td></tr>")
        notes.append(f"{escape(name)}: {escape(baseline['method'])}")
    segment_rows = "".join(
        f"<tr><td>{s['segment']} {escape(s['name'])}</td><td>{_num(s['scar_percent'])}</td>"
        f"<td>{escape(s['transmurality_class'])}</td></tr>" for s in report["aha_segments"])
    warnings = "".join(f'<p class="warn">&#9888; {escape(w)}</p>' for w in report["warnings"])
    models = ", ".join(f"{escape(m['name'])} {escape(m['version'])}" for m in report["models"])
    lo, hi = value_range
    span = max(hi - lo, 1.0)
    return _template("viewer.html").substitute(
        series_short=escape(report["series_instance_uid"][-12:]),
        series_uid=escape(report["series_instance_uid"]), analysis_id=escape(report["id"]),
        pipeline=escape(report["pipeline"]), models=models,
        provider=escape(report["execution_provider"]), created_at=escape(report["created_at"]),
        n_slices=len(slices), window=f"{window:.2f}",
        window_max=f"{2 * span:.2f}", level=f"{level:.2f}", level_min=f"{lo:.2f}",
        level_max=f"{hi:.2f}", slice_rows=slice_rows,
        scar_percent=_num(report["scar_percent"]), interval=_interval_text(report),
        quality_block=_quality_block(report),
        contrast=escape(report.get("contrast") or "unknown"),
        ratio=_num(report["scar_to_myocardium_ratio"], 3),
        myo_ml=_num(report["myocardium_volume_ml"]), myo_g=_num(report["myocardium_mass_g"]),
        scar_ml=_num(report["scar_volume_ml"], 2), scar_g=_num(report["scar_mass_g"], 2),
        mvo_ml=_num(report.get("mvo_volume_ml", 0.0), 2),
        mvo_percent=_num(report.get("mvo_percent", 0.0)),
        slice_spacing=_num(report["slice_spacing_mm"]),
        pixel_spacing=" x ".join(_num(v, 2) for v in report["pixel_spacing_mm"]),
        warnings=warnings, method_rows=method_rows, baseline_notes="; ".join(notes),
        bullseye=bullseye_svg(report["aha_segments"]), legend=legend_svg(),
        segment_rows=segment_rows, aha_reference=escape(report["aha_reference"]),
        start=start, start_label=start + 1,
        patient_name=escape(_person(identity.get("patient_name"))
                            or "(no name)"),
        patient_id=escape(identity.get("patient_id") or "(no ID)"),
        study_date=escape(_study_date(identity.get("study_date", "")) or "(no date)"),
        series_description=escape(identity.get("series_description") or "(no description)"),
        data_json=_json_for_script({"slices": [{"scar_percent": s["scar_percent"]}
                                               for s in slices],
                                    "window": window, "level": level, "start": start}))


def _verdict_cell(verdict: str | None) -> str:
    if verdict == "review":
        return '<span class="review-tag">REVIEW NEEDED</span>'
    return escape(verdict or "")


def _quality_block(report: dict) -> str:
    """A result to be checked by a person says so above everything else, with the reasons."""
    quality = report.get("quality") or {}
    if quality.get("verdict") != "review":
        return ""
    reasons = "".join(f"<li>{escape(r)}</li>" for r in quality.get("reasons", []))
    return ('<div class="review" role="alert" id="review"><b>REVIEW NEEDED</b>: do not read '
            f"this result without checking the contours.<ul>{reasons}</ul></div>")


def _interval_text(report: dict) -> str:
    bounds = report.get("scar_percent_interval")
    if not bounds:
        return "no interval"
    return f"95 % interval {_num(bounds[0])}-{_num(bounds[1])} %"


def _person(name: str | None) -> str:
    """A DICOM person name (PN, components split by ^) as a reader writes it."""
    return (name or "").replace("^", " ").strip()


def _patient_cell(a: dict) -> str:
    name = _person(a.get("patient_name"))
    return (f"{escape(name) or '<span class=muted>(no name)</span>'}<br>"
            f"<span class=muted>{escape(a.get('patient_id') or '(no ID)')}</span>")


def index_page(recent: list[dict], pipelines: list[str], default_pipeline: str) -> str:
    """The front page: recent analyses by patient, study date and series, as a reader looks
    for them (the series UID's tail is kept as a tooltip)."""
    rows = "".join(
        f"<tr><td>{escape(a['created_at'][:19].replace('T', ' '))}</td>"
        f"<td>{_patient_cell(a)}</td>"
        f"<td>{escape(_study_date(a.get('study_date') or '') or '—')}</td>"
        f'<td title="series {escape(a["series_instance_uid"])}">'
        f"{escape(a.get('series_description') or '(no description)')}</td>"
        f"<td>{escape(a['pipeline'])}</td>"
        f'<td class="num">{_num(a["scar_percent"])}</td><td>{_verdict_cell(a.get("verdict"))}</td>'
        f'<td><a href="/v1/analyses/{escape(a["id"])}/viewer">viewer</a></td></tr>'
        for a in recent) or '<tr><td colspan="8" class="muted">none yet</td></tr>'
    options = "".join(
        f'<option value="{escape(p)}"{" selected" if p == default_pipeline else ""}>'
        f"{escape(p)}</option>" for p in pipelines)
    return _template("index.html").substitute(version=escape(__version__), rows=rows,
                                              pipeline_options=options)


def login_page(next_path: str, failed: bool = False) -> str:
    """The small form that exchanges the API key for a session cookie."""
    error = ('<p class="error" role="alert">That is not the API key.</p>' if failed else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in — LGE scar service</title>
<style>body {{ font: 16px system-ui, sans-serif; max-width: 28em; margin: 4em auto; }}
input {{ font-size: 1em; padding: 6px; width: 100%; margin: 6px 0; }}
.error {{ color: #a00; font-weight: 600; }}</style></head>
<body><h1>LGE scar service</h1>
<p>This service is protected by an API key. Enter it to read results in this browser;
the session lasts a few hours and is kept in a cookie no script can read.</p>
{error}<form method="post" action="/login">
<input type="hidden" name="next" value="{escape(next_path)}">
<label>API key <input type="password" name="key" autocomplete="current-password" autofocus
required></label>
<input type="submit" value="Sign in"></form></body></html>
"""
