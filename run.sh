#!/usr/bin/env bash
# Main job: set up .venv, import the published AT2 databases into data/ (once), then reproduce
# AT2 on the five published train/test pairs of each database (exact engine, seed 2021, budget
# 100) beside random epoch-wise search, printing the mean recommended rank at 10/25/50/100 queries.
#   AT2_DATA   the AT2 authors' data folder (default: ../shared/data/at2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
bash scripts/setup-venv.sh
py="${AT2_VENV:-$root/.venv}/bin/python"
src="${AT2_DATA:-$root/../shared/data/at2}"
if [ ! -f data/HyperRec.h5 ] || [ ! -f data/LCBench.h5 ]; then
  "$py" -m hyperrec import-at2 "$src" data
fi
for db in HyperRec LCBench; do
  "$py" -m hyperrec -q info "data/$db.h5" | head -n 3
  "$py" benchmarks/at2_quality.py --database "data/$db.h5" --engine exact --seeds 2021
done
