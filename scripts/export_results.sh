#!/usr/bin/env bash
# Copy the small files of an experiment run (report, plots, summaries, training logs) to
# docs/results/NAME for committing: scripts/export_results.sh runs/aspirin_schnet-cpu [NAME]
set -euo pipefail
run=${1:?usage: scripts/export_results.sh RUN_DIR [NAME]}
name=${2:-$(basename "$run")}
[ -f "$run/report.md" ] || { echo "$run/report.md missing: run 'python -m stablejax report $run' first" >&2; exit 2; }
out=docs/results/$name
mkdir -p "$out"
for f in report.md summary.json experiment.json timings.json survival.png hr.png bonds.png rdf.png msd.png history.png; do
  [ -f "$run/$f" ] && cp "$run/$f" "$out/"
done
[ -f "$run/pretrain/results.json" ] && cp "$run/pretrain/results.json" "$out/pretrain_results.json"
[ -f "$run/stable_model/stable/metrics.jsonl" ] && cp "$run/stable_model/stable/metrics.jsonl" "$out/stable_metrics.jsonl"
echo "exported $run -> $out"
