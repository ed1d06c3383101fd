#!/usr/bin/python3
"""Draws doc/img/gunicorn.svg from the file the gunicorn end-to-end test
writes (ctest e2e.gunicorn: build/<preset>/python/e2e_gunicorn.json).

For each scope: the allowance, what shmlimit's throttles admitted and what
DRF's throttles with the default per-process cache admitted, through the
same 4 gunicorn workers. Plain SVG, no plotting library: the numbers are
the test's, drawn as they are.

    /usr/bin/python3 doc/img/plot_gunicorn.py build/ci/python/e2e_gunicorn.json doc/img/gunicorn.svg
"""
import json
import sys
from xml.sax.saxutils import escape

data = json.load(open(sys.argv[1]))
out = sys.argv[2]
res = data["results"]
scopes = [s for s in ("anon", "user", "scoped", "burst+sustained") if s in res["shmlimit"]]
series = [("allowance", "#888888", lambda s: res["shmlimit"][s]["allowance"]),
          ("shmlimit throttles", "#2b7bba", lambda s: res["shmlimit"][s]["admitted"]),
          ("DRF throttles + LocMemCache", "#d9534f", lambda s: res["drf"][s]["admitted"])]
top = max(f(s) for _, _, f in series for s in scopes)
W, H, left, bottom, topm = 760, 380, 60, 60, 50
plot_h = H - bottom - topm
group_w = (W - left - 20) / len(scopes)
bar_w = group_w / (len(series) + 1)
y = lambda v: topm + plot_h - plot_h * v / top
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">Requests admitted by {data["workers"]} gunicorn workers '
         f'({data["threads"]} client threads, 120 requests per scope)</text>']
for v in range(0, top + 1, 20):
    parts.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e0e0e0"/>')
    parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
for g, scope in enumerate(scopes):
    x0 = left + g * group_w + bar_w / 2
    for i, (_, color, f) in enumerate(series):
        v = f(scope)
        x = x0 + i * bar_w
        parts.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bar_w - 2:.1f}" height="{plot_h * v / top:.1f}" fill="{color}"/>')
        parts.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y(v) - 4:.1f}" text-anchor="middle">{v}</text>')
    parts.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{H - bottom + 18}" text-anchor="middle">{escape(scope)}</text>')
for i, (name, color, _) in enumerate(series):
    x = left + i * 230
    parts.append(f'<rect x="{x}" y="{H - 24}" width="12" height="12" fill="{color}"/>')
    parts.append(f'<text x="{x + 18}" y="{H - 14}">{escape(name)}</text>')
parts.append("</svg>")
open(out, "w").write("\n".join(parts) + "\n")
print(f"wrote {out}")
