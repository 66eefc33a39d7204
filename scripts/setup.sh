#!/usr/bin/env bash
# Install what the site and the tests need, and nothing that is already there.
# Idempotent: a second run on an installed machine checks and does nothing.
#   - Debian packages: graphviz (dot), chromium (the browser tests), fonts,
#     npm, and Fashion-MNIST (dataset-fashion-mnist, the second data set);
#   - .venv from the pinned requirements.txt (reinstalled when it changes);
#   - node_modules from the pinned package-lock.json (reinstalled when it
#     changes): mathjax-full, which typesets the maths at build time
#     (scripts/typeset_math.mjs), and axe-core, which the browser tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
need_debian() {  # need_debian PACKAGE TEST-COMMAND...
  local package=$1; shift
  if ! "$@" >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup: Debian package $package is missing; install it as root (apt-get install $package)" >&2
      exit 1
    fi
    if [ "$apt_updated" = 0 ]; then
      echo "setup: apt-get update"
      apt-get update -qq
      apt_updated=1
    fi
    echo "setup: installing Debian package $package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  fi
}
need_debian graphviz command -v dot
need_debian chromium test -x /usr/bin/chromium
need_debian fonts-dejavu-core test -d /usr/share/fonts/truetype/dejavu
need_debian npm command -v npm
need_debian dataset-fashion-mnist test -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

# Python packages, pinned.
requirements_hash=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$requirements_hash" ]; then
  echo "setup: installing requirements.txt into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$requirements_hash" > .venv/.requirements.sha256
fi

# The JAX and PyTorch backends, for the tests only (`setup.sh --backends`).
if [ "${1:-}" = "--backends" ]; then
  backends_hash=$(sha256sum requirements-backends.txt | cut -d' ' -f1)
  if [ "$(cat .venv/.requirements-backends.sha256 2>/dev/null)" != "$backends_hash" ]; then
    echo "setup: installing requirements-backends.txt (JAX, the CPU build of PyTorch) into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-backends.txt
    echo "$backends_hash" > .venv/.requirements-backends.sha256
  fi
fi

# npm packages, pinned by package-lock.json. The site serves none of them:
# mathjax-full typesets the maths when the site is built (so pages load no
# MathJax script), axe-core is injected into pages by the accessibility tests.
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.package-lock.sha256 2>/dev/null)" != "$lock_hash" ]; then
  echo "setup: installing the npm packages of package-lock.json into node_modules"
  npm ci --silent --no-audit --no-fund >/dev/null
  echo "$lock_hash" > node_modules/.package-lock.sha256
fi

# Pages used to load MathJax at run time from a copy in files/assets/mathjax;
# remove that copy, and the one built into output/, where an old checkout has them.
if [ -d files/assets/mathjax ] || [ -d output/assets/mathjax ]; then
  echo "setup: removing the run-time MathJax copy (maths are typeset at build time now)"
  rm -rf files/assets/mathjax output/assets/mathjax
fi
