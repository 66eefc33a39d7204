#!/usr/bin/env bash
# Install what the site and the tests need, and nothing that is already there.
# Idempotent: a second run on an installed machine checks and does nothing.
#   - Debian packages: graphviz (dot), chromium (the browser tests), fonts;
#   - .venv from the pinned requirements.txt (reinstalled when it changes);
#   - MathJax from the pinned npm package, copied into files/assets/mathjax.
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

# MathJax 3, pinned by package-lock.json, served from the site's own files.
# SVG output only: the CommonHTML output's web fonts are left out.
mathjax_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat files/assets/mathjax/.package-lock.sha256 2>/dev/null)" != "$mathjax_hash" ]; then
  echo "setup: installing MathJax from npm into files/assets/mathjax"
  npm ci --silent --no-audit --no-fund >/dev/null
  rm -rf files/assets/mathjax
  mkdir -p files/assets
  cp -r node_modules/mathjax/es5 files/assets/mathjax
  rm -rf files/assets/mathjax/output/chtml files/assets/mathjax/output/chtml.js \
         files/assets/mathjax/*chtml*.js
  echo "$mathjax_hash" > files/assets/mathjax/.package-lock.sha256
fi
