"""The evaluation report as one self-contained HTML page (`report.html`): opens from disk, no network.

Per benchmark: the counts, flags for stand-in images, rows not supported and benchmarks with
nothing scored; a bar chart (inline SVG) of every headline figure and category for each
member and ensemble method, with the paper's reference numbers as grey bars; the same
numbers in a table; and a reliability diagram of prob_chosen = sigmoid(margin) per model.
Every number shown carries `data-label` / `data-metric` attributes, so a browser test can
read back what is drawn.
"""

from __future__ import annotations

from html import escape

from mrm_ray.eval.markdown import STAND_IN, VIDEO_ROUTES, categories, inputs, left_out, sizes, value
from mrm_ray.eval.metrics import percent

PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00", "#b82e2e",
           "#316395")
REFERENCE_SHADES = ("#9e9e9e", "#c4c4c4", "#757575")
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1040px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
code{background:#f4f4f4;padding:0 3px;border-radius:3px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.flag{padding:6px 10px;margin:8px 0;border-radius:4px}
.flag.stand-in{background:#fff4d6;border:1px solid #e0b84c}.flag.not-supported{background:#eef3ff;border:1px solid #9db4e8}
.flag.nothing{background:#fde7e7;border:1px solid #d77}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:-1px}
.charts{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
tr.reference td{color:#666;font-style:italic}
"""


def _series(bench: dict) -> list[tuple[str, str, dict, bool]]:
    """(label, colour, result-like dict, is_reference) for each bar series of a benchmark."""
    out = [(label, PALETTE[i % len(PALETTE)], result, False) for i, (label, result) in enumerate(bench["results"].items())]
    out += [(f"paper: {label}", REFERENCE_SHADES[i % len(REFERENCE_SHADES)], ref, True)
            for i, (label, ref) in enumerate(bench["reference"].items())]
    return out


def _bars(name: str, bench: dict) -> str:
    """Horizontal grouped bars: one group per figure, one bar per model (reference bars where published)."""
    series = _series(bench)
    keys = bench["headline"] + categories(bench)
    label_w, plot_w, bar_h, gap = 170, 460, 13, 12
    y, parts = 24, []
    counts = sizes(bench)
    for key in keys:
        shown = [(label, colour, v, ref) for label, colour, result, ref in series
                 if (v := value(result, key)) == v and (not ref or key in result)]
        title = key + (f" (n={counts[key]})" if key in counts else "")
        parts.append(f'<text x="0" y="{y + bar_h - 2}" class="metric" font-weight="600">{escape(title)}</text>')
        for label, colour, v, ref in shown:
            w = max(0.0, min(1.0, v)) * plot_w
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour}">'
                f'<title>{escape(label)}: {percent(v)}</title></rect>'
                f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" font-size="11" class="value{" reference" if ref else ""}" '
                f'data-benchmark="{escape(name)}" data-label="{escape(label)}" data-metric="{escape(key)}">'
                f'{percent(v)}</text>')
            y += bar_h
        y += gap
    grid = "".join(f'<line x1="{label_w + plot_w * t / 4}" x2="{label_w + plot_w * t / 4}" y1="16" y2="{y}" '
                   f'stroke="#eee"/><text x="{label_w + plot_w * t / 4}" y="12" font-size="10" text-anchor="middle" '
                   f'fill="#888">{25 * t}%</text>' for t in range(5))
    legend = "".join(f'<span><i style="background:{colour}"></i>{escape(label)}</span>'
                     for label, colour, _, _ in series)
    return (f'<figure class="bars"><div class="legend">{legend}</div>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 60}" height="{y}" '
            f'font-family="system-ui,sans-serif" font-size="12">{grid}{"".join(parts)}</svg>'
            f'<figcaption>Accuracy (%) per figure and category; grey bars are the paper\'s numbers.</figcaption>'
            f'</figure>')


def _reliability(name: str, bench: dict) -> str:
    """prob_chosen against how often the pair's order is right, per model; the diagonal is perfect calibration."""
    size, pad = 300, 34
    def xy(p: float, o: float) -> tuple[float, float]:
        return pad + p * size, pad + (1 - o) * size
    parts = [f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#bbb" stroke-dasharray="4 3"/>']
    for t in range(0, 11, 2):
        x, yy = xy(t / 10, t / 10)
        parts.append(f'<text x="{x}" y="{pad + size + 14}" font-size="10" text-anchor="middle">{t / 10:.1f}</text>'
                     f'<text x="{pad - 6}" y="{yy + 3}" font-size="10" text-anchor="end">{t / 10:.1f}</text>')
    parts.append(f'<text x="{pad + size / 2}" y="{pad + size + 30}" text-anchor="middle" font-size="11">'
                 'prob_chosen (predicted)</text>'
                 f'<text x="10" y="{pad + size / 2}" font-size="11" transform="rotate(-90 10 {pad + size / 2})" '
                 'text-anchor="middle">observed frequency</text>')
    legend = []
    for i, (label, cal) in enumerate(bench["calibration"].items()):
        colour = PALETTE[i % len(PALETTE)]
        points = [(b["mean_prob"], b["observed"], b["count"]) for b in cal["bins"] if b["count"]]
        path = " ".join("{:.1f},{:.1f}".format(*xy(p, o)) for p, o, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        biggest = max((n for _, _, n in points), default=1)
        for p, o, n in points:
            x, yy = xy(p, o)
            parts.append(f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="{2 + 4 * (n / biggest) ** 0.5:.1f}" fill="{colour}" '
                         f'fill-opacity="0.7"><title>{escape(label)}: predicted {p:.3f}, observed {o:.3f}, '
                         f'{n} (pair, order)s</title></circle>')
        legend.append(f'<span><i style="background:{colour}"></i>{escape(label)}: ECE '
                      f'<b class="ece" data-benchmark="{escape(name)}" data-label="{escape(label)}">'
                      f'{percent(cal["ece"])}</b></span>')
    return (f'<figure class="reliability"><svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" '
            f'height="{size + 2 * pad + 10}" font-family="system-ui,sans-serif">{"".join(parts)}</svg>'
            f'<div class="legend">{"".join(legend)}</div><figcaption>Reliability of prob_chosen = sigmoid(margin), '
            'each pair in both orders; ECE in percentage points.</figcaption></figure>')


def _table(name: str, bench: dict) -> str:
    keys = bench["headline"] + categories(bench)
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    rows = []
    for label, colour, result, ref in _series(bench):
        cells = "".join(
            f'<td class="number" data-benchmark="{escape(name)}" data-label="{escape(label)}" data-metric="{escape(k)}">'
            f'{percent(value(result, k)) if not ref or k in result else ""}</td>' for k in keys)
        rows.append(f'<tr class="{"reference" if ref else "model"}"><td><i style="display:inline-block;width:10px;'
                    f'height:10px;background:{colour}"></i> {escape(label)}</td>{cells}</tr>')
    return f'<table class="numbers"><tr><th>model</th>{head}</tr>{"".join(rows)}</table>'


def _section(name: str, bench: dict) -> str:
    counts = bench["counts"]
    out = [f'<section class="benchmark" id="bench-{escape(name)}" data-benchmark="{escape(name)}">',
           f'<h2>{escape(bench["title"])} <code>{escape(name)}</code></h2>',
           f'<p class="counts" data-scored="{counts["scored"]}" data-read="{counts["read"]}" '
           f'data-bad="{counts["bad_rows"]}" data-not-supported="{counts["not_supported"]}" '
           f'data-unscorable="{counts["unscorable"]}" data-stand-in="{counts["stand_in_images"]}">'
           f'{escape(left_out(bench))}</p>', f'<p>File: <code>{escape(bench["path"])}</code></p>']
    if "message" in bench:
        out.append(f'<div class="flag nothing"><b>Nothing scored.</b> {escape(bench["message"])}</div></section>')
        return "".join(out)
    if counts["stand_in_images"]:
        out.append(f'<div class="flag stand-in"><b>{counts["stand_in_images"]} {escape(STAND_IN)}</b></div>')
    for route, n in bench.get("video_routes", {}).items():
        out.append(f'<div class="flag video-route" data-route="{escape(route)}"><b>{n} video pairs</b> scored on the '
                   f'{escape(route)} route: {escape(VIDEO_ROUTES[route])}</div>')
    if counts["not_supported"]:
        reasons = "; ".join(f"{r} ({n})" for r, n in bench["not_supported_reasons"].items())
        out.append(f'<div class="flag not-supported"><b>{counts["not_supported"]} rows not supported</b>, left out: '
                   f'{escape(reasons)}</div>')
    out += ['<div class="charts">', _bars(name, bench), _reliability(name, bench), "</div>", _table(name, bench),
            "</section>"]
    return "".join(out)


def html_page(report: dict) -> str:
    members = "".join(f"<tr><td>{escape(n)}</td><td><code>{escape(str(m['path']))}</code></td>"
                      f"<td>{inputs(m)}</td><td>{m['score_mean']:.4f}</td><td>{m['score_std']:.4f}</td></tr>"
                      for n, m in report["members"].items())
    toc = " · ".join(f'<a href="#bench-{escape(n)}">{escape(b["title"])}</a>' for n, b in report["benchmarks"].items())
    sections = "".join(_section(n, b) for n, b in report["benchmarks"].items())
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Reward model evaluation</title>"
            f"<style>{STYLE}</style></head><body><h1>Reward model evaluation</h1><p>{toc}</p>"
            "<table class=\"members\"><tr><th>member</th><th>path</th><th>scores</th><th>score mean</th>"
            "<th>score std</th></tr>"
            f"{members}</table><p>Ensemble methods: {escape(', '.join(report['methods']))}</p>{sections}"
            "</body></html>\n")
