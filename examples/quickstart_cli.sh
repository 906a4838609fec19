#!/usr/bin/env bash
# The command-line quickstart on ethanol (a small built-in molecule), at sizes that run in
# under two minutes on 2 CPU cores. Each stage writes runs/NAME under the current directory
# and the next stage finds it by that name. The model is small and briefly trained, so StABlE
# finds unstable replicas and enters a learning phase.
set -euo pipefail

python -m stablejax data generate ethanol                   # GFN2-xTB data (cached)
python -m stablejax pretrain --system ethanol --name eth \
    --max-epochs 10 --n-interactions 1 --features 32        # -> runs/eth
python -m stablejax train --pretrained eth \
    --cfg.n-replicas 8 --cfg.epoch-ps 0.25 --cfg.n-epochs 4 # -> runs/eth-stable
python -m stablejax evaluate --model eth --n-replicas 8 --time-ps 1        # -> runs/eth/eval
python -m stablejax evaluate --model eth-stable --n-replicas 8 --time-ps 1 # -> runs/eth-stable/eval
python -m stablejax report eth-stable                       # -> runs/eth-stable/report.md
