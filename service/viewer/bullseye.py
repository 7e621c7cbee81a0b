"""The AHA 16-segment bull's-eye as inline SVG, coloured by scar %.

The usual display (Cerqueira et al., Circulation 2002): basal ring outside,
mid ring, apical ring inside; anterior at the top, septum on the left,
lateral on the right, inferior at the bottom. Segment 1 (basal anterior)
is centred at the top and segments run counter-clockwise as seen by the
reader (anterior -> septum -> inferior -> lateral). Each segment shows its
number and scar %; its transmurality class is written under it and in its
tooltip. A segment with microvascular obstruction carries a dot in the MVO
colour of the overlay and the SEG (black-rimmed, since the ramp's low end is
yellow too), explained in the legend.
"""

from __future__ import annotations

import math
from html import escape

from service.dicom.seg import MVO_RGB

# (first segment, sectors, inner radius, outer radius, angle at which sector 0 is centred)
RINGS = ((1, 6, 0.62, 0.94, 90.0), (7, 6, 0.34, 0.62, 90.0), (13, 4, 0.08, 0.34, 90.0))
# Sequential, colour-blind-safe ramp (viridis stops), 0 % -> 100 % scar.
RAMP = ((0.0, (253, 231, 37)), (0.25, (94, 201, 98)), (0.5, (33, 145, 140)),
        (0.75, (59, 82, 139)), (1.0, (68, 1, 84)))
NO_SCAR = (244, 244, 244)  # exactly 0 %: neutral, so any scar at all shows as colour
NO_DATA = (200, 200, 200)
MAX_SCALE_PERCENT = 50.0  # the ramp saturates here: scar % beyond it is all "a lot"


def scar_colour(percent: float | None) -> tuple[int, int, int]:
    if percent is None or math.isnan(percent):
        return NO_DATA
    if percent <= 0.0:
        return NO_SCAR
    t = min(percent / MAX_SCALE_PERCENT, 1.0)
    for (t0, c0), (t1, c1) in zip(RAMP, RAMP[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return tuple(round(a + f * (b - a)) for a, b in zip(c0, c1, strict=True))
    return RAMP[-1][1]


def _point(radius: float, degrees: float, size: float) -> tuple[float, float]:
    a = math.radians(degrees)
    return (size / 2 + radius * size / 2 * math.cos(a), size / 2 - radius * size / 2 * math.sin(a))


def _wedge(r0: float, r1: float, a0: float, a1: float, size: float) -> str:
    (x0, y0), (x1, y1) = _point(r1, a0, size), _point(r1, a1, size)
    (x2, y2), (x3, y3) = _point(r0, a1, size), _point(r0, a0, size)
    big = 1 if (a1 - a0) > 180 else 0
    R, r = r1 * size / 2, r0 * size / 2  # noqa: N806 - radii
    return (f"M{x0:.2f},{y0:.2f} A{R:.2f},{R:.2f} 0 {big} 0 {x1:.2f},{y1:.2f} "
            f"L{x2:.2f},{y2:.2f} A{r:.2f},{r:.2f} 0 {big} 1 {x3:.2f},{y3:.2f} Z")


def bullseye_svg(segments: list[dict], size: int = 320) -> str:
    """``segments``: the report's ``aha_segments`` (segment, name, scar_percent, class)."""
    by_number = {s["segment"]: s for s in segments}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
             f'width="{size}" height="{size}" role="img" aria-label="AHA 16-segment '
             'bull\'s-eye of scar percent" class="bullseye">']
    for first, sectors, r0, r1, centre in RINGS:
        span = 360.0 / sectors
        for i in range(sectors):
            number = first + i
            seg = by_number.get(number, {})
            pct = seg.get("scar_percent")
            a0 = centre - span / 2 + i * span
            colour = _rgb(scar_colour(pct))
            mvo = float(seg.get("mvo_percent") or 0.0)
            label = escape(f"{number} {seg.get('name', '')}: "
                           + ("no data" if pct is None else
                              f"{pct:.1f} % of its myocardium is scar; transmural extent "
                              f"where scarred {seg.get('transmurality_class', '?')}")
                           + (f", MVO {mvo:.1f} %" if mvo > 0 else ""))
            parts.append(f'<path d="{_wedge(r0, r1, a0, a0 + span, size)}" fill="{colour}" '
                         f'stroke="#fff" stroke-width="1.5" data-segment="{number}">'
                         f"<title>{label}</title></path>")
            x, y = _point((r0 + r1) / 2, a0 + span / 2, size)
            if mvo > 0:
                mx, my = _point(r1 - 0.045, a0 + span / 2, size)
                parts.append(f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="4.5" '
                             f'fill="{_rgb(MVO_RGB)}" stroke="#000" stroke-width="1" '
                             f'class="mvo" data-segment="{number}"><title>{label}</title>'
                             "</circle>")
            dark = pct is not None and pct >= 0.45 * MAX_SCALE_PERCENT
            ink = "#fff" if dark else "#000"
            value = "–" if pct is None else f"{pct:.0f}%"
            parts.append(f'<text x="{x:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                         f'font-size="11" font-weight="bold" fill="{ink}">{number}</text>'
                         f'<text x="{x:.1f}" y="{y + 9:.1f}" text-anchor="middle" '
                         f'font-size="10" fill="{ink}">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*colour)


def legend_svg(width: int = 320) -> str:
    """The colour ramp with its scale, for beside the bull's-eye."""
    stops = "".join(f'<stop offset="{t:.2f}" stop-color="rgb({c[0]},{c[1]},{c[2]})"/>'
                    for t, c in RAMP)
    ticks = "".join(
        f'<text x="{10 + (width - 20) * p / MAX_SCALE_PERCENT:.1f}" y="34" font-size="10" '
        f'text-anchor="middle">{p:.0f}{"%+" if p == MAX_SCALE_PERCENT else "%"}</text>'
        for p in (0, 10, 20, 30, 40, 50))
    mvo = (f'<circle cx="15" cy="50" r="4.5" fill="{_rgb(MVO_RGB)}" stroke="#000" '
           'stroke-width="1"/><text x="25" y="54" font-size="10">microvascular obstruction '
           '(MVO) in the segment</text>')
    caption = ('<text x="10" y="72" font-size="10">colour: scar as % of the segment\'s '
               'myocardium (not transmural extent)</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="78" '
            f'aria-label="scar percent colour scale"><defs><linearGradient id="ramp">{stops}'
            f'</linearGradient></defs><rect x="10" y="4" width="{width - 20}" height="16" '
            f'fill="url(#ramp)" stroke="#888"/>{ticks}{mvo}{caption}</svg>')
