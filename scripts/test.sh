#!/usr/bin/env bash
# The project's test command: type-check, lint, unit tests, integration tests against
# real Postgres instances the tests start themselves, the gateway's integration tests
# again with the pool behind the lease link (as `tidepool up` and `gateway --pooler`
# run it), then the PostgreSQL regression suite directly and through a gateway, in
# process and over the link (strict: a test that passes directly must pass through
# Tidepool), and the chaos suite: writers in three languages through real faults of
# Postgres, poolers and the gateway. TIDEPOOL_SKIP_REGRESS=1 leaves the regression
# suite out, TIDEPOOL_SKIP_CHAOS=1 the chaos suite.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$tidepool_root"
npm test
npm run test:link
if [ "${TIDEPOOL_SKIP_REGRESS:-0}" != 1 ]; then
  npm run test:regress -- --strict
  npm run test:regress -- --strict --pooler-process
fi
if [ "${TIDEPOOL_SKIP_CHAOS:-0}" != 1 ]; then
  npm run test:chaos
fi
