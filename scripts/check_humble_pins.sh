#!/usr/bin/env bash
# Check that requirements/humble.txt installs on the robot image's Python (ROS 2 Humble, Ubuntu
# 22.04, CPython 3.10, x86_64) next to spot_wrapper's pins (requirements/humble-spot-wrapper.txt),
# without a Docker engine or a Python 3.10 here. Needs PyPI; reads wheel metadata only (~30 s).
#   1. every pin has a cp310 binary wheel:   pip install --dry-run --no-deps --python-version 3.10
#   2. the pins resolve together with spot_wrapper's, environment markers evaluated for 3.10
#      (pip evaluates markers for the interpreter it runs on, so this step uses uv's resolver;
#      it is skipped with a note where uv is not installed).
# Usage: scripts/check_humble_pins.sh [requirements file] ; exit 0 = both hold.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=${1:-requirements/humble.txt}
SPOT=requirements/humble-spot-wrapper.txt
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_35_x86_64; do
  platforms+=(--platform "$tag")
done

echo "[humble-pins] 1/2 every pin of $REQ has a CPython 3.10 wheel"
"$PY" -m pip install --dry-run --quiet --no-deps --ignore-installed --target "$tmp/target" \
  --python-version 3.10 --implementation cp --only-binary=:all: "${platforms[@]}" \
  -r "$REQ" > "$tmp/pip.log" 2>&1 || { grep -v "^WARNING: Location" "$tmp/pip.log"; exit 1; }

echo "[humble-pins] 2/2 $REQ resolves with $SPOT for Python 3.10"
UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  echo "[humble-pins] uv not installed: resolution step skipped (pip install uv)"
  exit 0
fi
"$UV" pip compile "$REQ" "$SPOT" --python-version 3.10 --python-platform x86_64-manylinux_2_35 \
  --only-binary :all: --no-header --quiet -o "$tmp/humble.lock"
for pin in $(grep -E '^[A-Za-z0-9_.-]+==' "$REQ" | cut -d' ' -f1); do
  grep -qix "$pin" "$tmp/humble.lock" || { echo "[humble-pins] $pin resolved differently"; exit 1; }
done
echo "[humble-pins] ok: $(grep -c '==' "$tmp/humble.lock") packages resolve for Python 3.10"
