#!/usr/bin/env bash
# Create .venv with food_assets and everything its tests need. Idempotent: a second run only
# checks. Debian packages (chromium, chromium-driver, postgresql) are installed when running as
# root with apt-get; elsewhere the browser and Postgres tests say how to get them and skip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch/torchvision are pinned in pyproject (2.14.1 / 0.29.1): pip takes them from the local
# wheel cache where there is one instead of downloading several GB.
# pip's own "already satisfied" check takes ~5 s on 2 cores, paid by every `make run` and
# `make test`; so it runs only when pyproject.toml changed since the last install (its hash is
# kept in .venv) or food_assets does not import. FOOD_ASSETS_REINSTALL=1 forces it (after
# removing a package by hand, say).
stamp=.venv/.food_assets-pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "${FOOD_ASSETS_REINSTALL:-0}" = "1" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || ! .venv/bin/python -c 'import food_assets' 2>/dev/null; then
  .venv/bin/pip install -q -e '.[dev,demo,team]'
  echo "$want" > "$stamp"
fi

if [ "${FOOD_ASSETS_SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
echo "environment ready: .venv ($(.venv/bin/python -c 'from importlib.metadata import version as v; print("torch", v("torch"), "dagster", v("dagster"))'))"
