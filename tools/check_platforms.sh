#!/usr/bin/env bash
# Does every dependency (core, tfds, test and experiments extras) resolve to wheels for Python 3.11 on
# macOS arm64, Linux x86-64 and Linux arm64? Resolves only (pip --dry-run), installs nothing.
# promise, a pure-Python dependency of tensorflow-datasets, is published as an sdist only, so it
# is built into a wheel here first; every other package must have a wheel for the platform.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel -q --no-deps promise -w "$work/wheels" 2>/dev/null
mapfile -t reqs < <("$PY" -c "
import tomllib
project = tomllib.load(open('pyproject.toml', 'rb'))['project']
extras = project['optional-dependencies']
print('\n'.join(project['dependencies'] + extras['tfds'] + extras['test'] + extras['experiments']))")
status=0
for target in macosx_14_0_arm64 \
    "manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64" \
    "manylinux_2_28_aarch64 manylinux_2_27_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64"; do
  platforms=()
  for p in $target; do platforms+=(--platform "$p"); done
  if "$PY" -m pip install -q --dry-run --ignore-installed --target "$work/target" "${platforms[@]}" \
      --python-version 3.11 --only-binary=:all: --find-links "$work/wheels" "${reqs[@]}" >"$work/log" 2>&1; then
    echo "${target%% *}: resolves"
  else
    echo "${target%% *}: FAILS: $(grep -m1 '^ERROR' "$work/log")"; status=1
  fi
done
exit $status
