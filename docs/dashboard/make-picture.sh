#!/usr/bin/env bash
# Makes docs/dashboard.png from a real run: alertfan, alertfan-demo-targets,
# Debian's prometheus and prometheus-alertmanager on loopback ports with the
# compose stack's configuration, six minutes of driven alert traffic with a
# 45-second outage of the targets in the middle (the traffic goes on), then the dashboard's
# queries rendered from Prometheus (render.py). Needs: go, prometheus,
# prometheus-alertmanager, python3-matplotlib.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cd "$repo"
go build -o "$work/alertfan" ./cmd/alertfan
go build -o "$work/alertfan-demo-targets" ./cmd/alertfan-demo-targets
go build -o "$work/alertfan-bench" ./cmd/alertfan-bench

mkdir -p "$work/deploy" && cp -r deploy/secrets "$work/deploy/"
sed -e 's#http://demo-targets:8080#http://127.0.0.1:18080#; s#http://demo-targets:8081#http://127.0.0.1:18081#' config.example.yml > "$work/config.yml"
sed -e 's#http://alertfan:9095#http://127.0.0.1:19095#' \
    -e "s#/etc/alertmanager/secrets/alertmanager_pd_key#$work/deploy/secrets/alertmanager_pd_key#" \
    deploy/alertmanager/alertmanager.yml > "$work/alertmanager.yml"
cp deploy/prometheus/alertfan.rules.yml deploy/prometheus/demo.rules.yml "$work/"
sed -e 's#alertmanager:9093#127.0.0.1:19093#; s#alertfan:9095#127.0.0.1:19095#; s#localhost:9090#127.0.0.1:19090#' \
    deploy/prometheus/prometheus.yml > "$work/prometheus.yml"

targets() { "$work/alertfan-demo-targets" --pagerduty.listen-address=127.0.0.1:18080 --backlog.listen-address=127.0.0.1:18081 --status.listen-address=127.0.0.1:18082 > "$work/targets.log" 2>&1 & echo $!; }
tp=$(targets); pids+=("$tp")
(cd "$work" && exec ./alertfan --config.file=config.yml --web.listen-address=127.0.0.1:19095 --log.level=warn > alertfan.log 2>&1) & pids+=($!)
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am" --web.listen-address=127.0.0.1:19093 --cluster.listen-address= > "$work/am.log" 2>&1 & pids+=($!)
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" --web.listen-address=127.0.0.1:19090 --rules.alert.resend-delay=10s > "$work/prom.log" 2>&1 & pids+=($!)
sleep 5

# The traffic runs on through the outage, so the picture shows alerts
# arriving while the targets are down, then the held work draining.
"$work/alertfan-bench" -drive http://127.0.0.1:19095/webhook -drive.rate 30 -duration 360s & drv=$!; pids+=("$drv")
sleep 150
echo "outage of the targets for 45 s (traffic continues)"
kill "$tp"; sleep 45
tp=$(targets); pids+=("$tp")
wait "$drv"
/usr/bin/python3 "$repo/docs/dashboard/render.py" --prometheus http://127.0.0.1:19090 --dashboard deploy/grafana/alertfan.json --minutes 6 --out "$repo/docs/dashboard.png"
echo "wrote docs/dashboard.png"
