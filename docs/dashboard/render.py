#!/usr/bin/python3
"""Render the panels of deploy/grafana/alertfan.json to one PNG.

Grafana is not packaged for Debian, so this draws the same PromQL queries
the dashboard uses, taken from Prometheus's query_range API, with
matplotlib. Usage:
    render.py --prometheus http://127.0.0.1:19090 --dashboard deploy/grafana/alertfan.json \
              --minutes 10 --out docs/dashboard.png
"""
import argparse
import datetime as dt
import json
import math
import re
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def query_range(base, expr, start, end, step):
    expr = expr.replace("$__rate_interval", "1m").replace('"$job"', '"alertfan"').replace('"$instance"', '".+"')
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        data = json.load(r)
    if data.get("status") != "success":
        raise RuntimeError(f"{expr}: {data}")
    return data["data"]["result"]


def label(metric):
    keep = {k: v for k, v in metric.items() if k not in ("__name__", "instance", "job")}
    return ", ".join(f"{k}={v}" for k, v in sorted(keep.items())) or "value"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.dashboard) as f:
        dash = json.load(f)
    panels = dash["panels"]
    end = dt.datetime.now(dt.timezone.utc).timestamp()
    start = end - a.minutes * 60
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 6.2, rows * 3.2), squeeze=False)
    for i, p in enumerate(panels):
        ax = axes[i // cols][i % cols]
        ax.set_title(p["title"], fontsize=10)
        n = 0
        for t in p["targets"]:
            for s in query_range(a.prometheus, t["expr"], start, end, 15):
                xs = [dt.datetime.fromtimestamp(float(v[0]), dt.timezone.utc) for v in s["values"]]
                ys = [float(v[1]) for v in s["values"]]
                ys = [y if math.isfinite(y) else float("nan") for y in ys]
                name = label(s["metric"])
                if t.get("legendFormat"):  # as Grafana shows it
                    name = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: s["metric"].get(m.group(1), ""), t["legendFormat"])
                ax.plot(xs, ys, linewidth=1.2, label=name[:48])
                n += 1
        ax.set_xlim(dt.datetime.fromtimestamp(start, dt.timezone.utc), dt.datetime.fromtimestamp(end, dt.timezone.utc))
        if n == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif n <= 8:
            ax.legend(fontsize=7, loc="upper left")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=dt.timezone.utc))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if unit:
            ax.set_ylabel(unit, fontsize=8)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"alertfan dashboard ({dash['title']}) — last {a.minutes} min, from Prometheus query_range", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(a.out, dpi=80)


if __name__ == "__main__":
    main()
