#!/usr/bin/env bash
# Set up the Track2Act ROS 2 workspace on a fresh Debian/Ubuntu machine (Python >= 3.10):
#   1. apt packages: cmake, a C++ compiler, Mesa EGL + OSMesa for headless MuJoCo rendering
#   2. .venv with pinned ROS 2 wheels from PyPI (requirements/ros.txt) and Python dependencies
#      (requirements/python.txt), all constrained by requirements/lock.txt
#   3. the CMake path fix for the ROS wheels (they were built under /opt/python/cp311-cp311)
#   4. t2a_msgs built for real with rosidl and installed into the venv
#   5. the ament_python packages and training/ (package `training`, console scripts t2a-train-*,
#      t2a-eval, ...) installed (editable) into the venv
# Idempotent: every step checks whether it is already done, so a second run takes seconds.
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3), VENV (default
# .venv), T2A_SKIP_APT=1 to skip apt (e.g. without root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
STAMPS="$VENV/.t2a-stamps"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
t_start=$(date +%s)

# --------------------------------------------------------------------------- 1. apt
APT_PACKAGES=(cmake make g++ git libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libosmesa6)
if [ "${T2A_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    say "apt: installing ${missing[*]}"
    $SUDO apt-get update -qq
    mkdir -p "$ROOT/build"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      > "$ROOT/build/apt.log" 2>&1 || { tail -n 30 "$ROOT/build/apt.log"; exit 1; }
  else
    say "apt: all packages present (${APT_PACKAGES[*]})"
  fi
fi

# --------------------------------------------------------------------------- 2. venv + wheels
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "venv: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 required"'
mkdir -p "$STAMPS"

reqs_hash=$(cat requirements/*.txt | sha256sum | cut -c1-16)
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$reqs_hash" ]; then
  say "pip: installing ROS 2 wheels and Python dependencies (pinned by requirements/lock.txt)"
  mkdir -p "$ROOT/build"
  {
    "$PY" -m pip install --upgrade "pip>=24" "setuptools>=68,<80" wheel &&
    "$PY" -m pip install -c requirements/lock.txt -r requirements/ros.txt -r requirements/python.txt
  } > "$ROOT/build/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$ROOT/build/pip.log" | tail -n 40; exit 1; }
  echo "$reqs_hash" > "$STAMPS/pip"
else
  say "pip: requirements unchanged since the last run"
fi

# --------------------------------------------------------------------------- 3. CMake path fix
# The ROS wheels were built in a manylinux container; their exported CMake files point at that
# container's Python headers and numpy include dir. Point them at this interpreter's.
py_inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$PY" -c 'import numpy; print(numpy.get_include())')
bad_files=$(grep -rl --include='*.cmake' '/opt/python/cp3' "$VENV/share" 2>/dev/null || true)
if [ -n "$bad_files" ]; then
  say "cmake: fixing Python/numpy include paths in $(echo "$bad_files" | wc -l) exported CMake files"
  echo "$bad_files" | xargs sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g"
else
  say "cmake: include paths already fixed"
fi

# --------------------------------------------------------------------------- 4. t2a_msgs
MSGS="$ROOT/ros2_ws/src/t2a_msgs"
msgs_hash=$( (cd "$MSGS" && cat CMakeLists.txt package.xml msg/* srv/*) | sha256sum | cut -c1-16)
if [ "$(cat "$STAMPS/t2a_msgs" 2>/dev/null)" != "$msgs_hash" ] || ! "$PY" -c 'import t2a_msgs.msg' 2>/dev/null; then
  say "t2a_msgs: generating and building interfaces with rosidl"
  BUILD="$ROOT/build/t2a_msgs"
  rm -rf "$BUILD"; mkdir -p "$ROOT/build"
  (
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    cmake -S "$MSGS" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$ROOT/build/t2a_msgs.log" 2>&1 &&
    cmake --build "$BUILD" -j "$(nproc)" >> "$ROOT/build/t2a_msgs.log" 2>&1 &&
    cmake --install "$BUILD" >> "$ROOT/build/t2a_msgs.log" 2>&1
  ) || { echo "t2a_msgs build failed; last lines of build/t2a_msgs.log:"; tail -n 40 "$ROOT/build/t2a_msgs.log"; exit 1; }
  # rosidl installs the Python package under the prefix's site-packages for this interpreter;
  # make sure the venv sees it whatever layout cmake chose.
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if ! "$PY" -c 'import t2a_msgs.msg' 2>/dev/null; then
    found=$(find "$VENV" -path '*/t2a_msgs/msg/__init__.py' -not -path "$site/*" | head -n 1)
    [ -n "$found" ] && echo "$(dirname "$(dirname "$(dirname "$found")")")" > "$site/t2a_msgs_path.pth"
  fi
  "$PY" -c 'import t2a_msgs.msg, t2a_msgs.srv' || { echo "t2a_msgs built but does not import"; exit 1; }
  echo "$msgs_hash" > "$STAMPS/t2a_msgs"
else
  say "t2a_msgs: up to date"
fi

# --------------------------------------------------------------------------- 5. t2a packages
PKGS=(t2a_common t2a_control t2a_perception t2a_planning t2a_sim t2a_bringup)
# Every package's setup.py (console scripts) and package.xml, and training/pyproject.toml: a change
# (or a package added to this list) reinstalls them all.
pkgs_hash=$( (cd ros2_ws/src && for p in "${PKGS[@]}"; do cat "$p/setup.py" "$p/package.xml"; done;
  cat "$ROOT/training/pyproject.toml") | sha256sum | cut -c1-16)
if [ "$(cat "$STAMPS/pkgs" 2>/dev/null)" != "$pkgs_hash" ]; then
  say "pip: installing ${PKGS[*]} training (editable)"
  mkdir -p "$ROOT/build"
  args=(-e training)
  for p in "${PKGS[@]}"; do args+=(-e "ros2_ws/src/$p"); done
  "$PY" -m pip install -q --no-deps --no-build-isolation "${args[@]}" > "$ROOT/build/pip-t2a.log" 2>&1 ||
    { tail -n 40 "$ROOT/build/pip-t2a.log"; exit 1; }
  echo "$pkgs_hash" > "$STAMPS/pkgs"
else
  say "t2a packages: installed"
fi
# Editable installs skip setup.py's data_files, so register the packages in the ament index and
# link their share/ folders to the sources (what `colcon build --symlink-install` does).
for p in "${PKGS[@]}"; do
  mkdir -p "$VENV/share/ament_index/resource_index/packages" "$VENV/share/$p"
  touch "$VENV/share/ament_index/resource_index/packages/$p"
  for item in package.xml config launch models rviz; do
    [ -e "ros2_ws/src/$p/$item" ] && ln -sfn "$ROOT/ros2_ws/src/$p/$item" "$VENV/share/$p/$item"
  done
done

say "done in $(( $(date +%s) - t_start )) s. Activate with: source scripts/env.sh"
