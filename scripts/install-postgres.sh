#!/usr/bin/env bash
# Install Debian's PostgreSQL server binaries for the monitor's PostgreSQL tests when possible
# (root + apt); otherwise say why those tests will skip. Never fails the build. The tests start
# their own throw-away cluster (initdb + pg_ctl in a temp dir); no system service is used.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "postgresql not installed and no root apt-get here: the monitor's PostgreSQL tests will be skipped"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; }; then
  echo "installed postgresql for the monitor's PostgreSQL tests"
else
  echo "could not install postgresql: the monitor's PostgreSQL tests will be skipped"
fi
exit 0
