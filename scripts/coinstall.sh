#!/usr/bin/env bash
# Can pip put hf-mm in one environment with the serving engines and TRL's vLLM extra? Each line asks pip's resolver
# (`pip install --dry-run`, which downloads package metadata, not wheels) for hf-mm from this checkout together with
# one of them, and prints what it would install. Exit status: the number of specs that do not resolve.
#   usage: scripts/coinstall.sh [PYTHON]   (default: .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
SPECS=("vllm==0.33.0" "sglang==0.5.23" "trl[vllm]==1.16.0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for spec in "${SPECS[@]}"; do
    report="$work/report.json"
    start=$(date +%s)
    if "$PYTHON" -m pip install --dry-run --ignore-installed --quiet --report "$report" . "$spec" >"$work/log" 2>&1; then
        "$PYTHON" - "$report" "$spec" "$(($(date +%s) - start))" <<'PY'
import json, sys
report, spec, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
got = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
       for item in json.load(open(report))["install"]}
keys = ["transformers", "torch", "trl", "peft", "accelerate", "datasets", "huggingface-hub", "vllm", "sglang"]
pins = ", ".join(f"{k} {got[k]}" for k in keys if k in got)
print(f"resolves   pip install hf-mm '{spec}'   ({len(got)} packages, {seconds} s): {pins}")
PY
    else
        failed=$((failed + 1))
        echo "CONFLICT   pip install hf-mm '$spec':"
        grep -v "^WARNING" "$work/log" | grep -A8 "conflict is caused" || tail -5 "$work/log"
    fi
done
exit $failed
