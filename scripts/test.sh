#!/usr/bin/env bash
# The project's test command: type-check, lint, unit tests, integration tests against
# real Postgres instances the tests start themselves.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$tidepool_root"
exec npm test
