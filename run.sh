#!/usr/bin/env bash
# Main job: the reproduction sweep. Sets up .venv (README's set-up), imports the published AT2
# databases into data/ once, runs every (database, pair, method, seed) trial not finished yet into
# records/, and writes the report (Markdown table and plots) into report/.
#
#   bash run.sh                 # full sweep: HyperRec and LCBench x 5 pairs x 7 methods x 3 seeds
#   bash run.sh --quick         # pair 0 of each database, seed 0, 20 queries (minutes on a CPU),
#                               # into records-quick/ and report-quick/
#   bash run.sh --methods at2,random --seeds 0,1 --budget 50 --workers 2
#   bash run.sh --methods lkgp --pairs 0 --seeds 0     # lkgp: ~15 min per trial on 2 cores
#   bash run.sh --backend ray [--address HOST:PORT]    # needs the 'ray' extra
#
# Flags are those of `python -m experiments.sweep --help`. Environment overrides (flags win):
#   AT2_DATA   the AT2 authors' data folder (default ../shared/data/at2)
#   DATABASES PAIRS METHODS SEEDS BUDGET DEVICE WORKERS   comma lists / values for the flags
#   RECORDS (default records)   REPORT (default report)
# A finished record made with other settings (another budget, or a method default changed since)
# stops the sweep with an error naming them (exit 2): give such runs their own RECORDS/--records
# directory, or move the old records away.
# Exits non-zero if any trial failed, after listing them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
bash scripts/setup-venv.sh
py="${AT2_VENV:-$root/.venv}/bin/python"
src="${AT2_DATA:-$root/../shared/data/at2}"
if [ ! -f data/HyperRec.h5 ] || [ ! -f data/LCBench.h5 ]; then
  "$py" -m hyperrec import-at2 "$src" data
fi
env_flags=()
for pair in databases:DATABASES pairs:PAIRS methods:METHODS seeds:SEEDS budget:BUDGET \
            device:DEVICE workers:WORKERS; do
  name="${pair#*:}"
  if [ -n "${!name:-}" ]; then env_flags+=("--${pair%%:*}" "${!name}"); fi
done
suffix=""  # --quick runs keep their records and report apart from the full sweep's
for arg in "$@"; do if [ "$arg" = --quick ]; then suffix="-quick"; fi; done
records="${RECORDS:-records$suffix}"
status=0
"$py" -m experiments.sweep --data data --records "$records" "${env_flags[@]}" "$@" || status=$?
if [ "$status" -ne 2 ]; then  # 2: refused bad input, nothing ran
  "$py" -m experiments.report "$records" --out "${REPORT:-report$suffix}"
fi
exit "$status"
