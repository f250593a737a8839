#!/usr/bin/env bash
# Lint the contracts under protos/ with the Buf CLI (rules in buf.yaml), fetched from npm by npx.
# Without npx (no Node.js) the check is skipped, not failed: the Python tests do not need it.
set -euo pipefail

BUF_VERSION="1.75.0"
cd "$(dirname "$0")/.."

if ! command -v npx >/dev/null 2>&1; then
    echo "lint_protos: npx not found (install Node.js to lint the protos with Buf); skipping proto lint"
    exit 0
fi

exec npx --yes "@bufbuild/buf@${BUF_VERSION}" lint
