#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs are on this machine, for runledger-testkit's clusters
# (the PostgreSQL backend's tests fail in CI without them). Installs Debian's postgresql package
# when they are missing and does nothing when they are there, so it is safe to run every time.
# Looks where the kit looks: `pg_config --bindir`, /usr/lib/postgresql/*/bin, initdb on PATH.
set -euo pipefail

required=(initdb postgres pg_ctl createdb)

has_all() {
  local dir=$1 program
  for program in "${required[@]}"; do
    [[ -x $dir/$program ]] || return 1
  done
}

server_dir() {
  local dir initdb
  if dir=$(pg_config --bindir 2>/dev/null) && has_all "$dir"; then
    echo "$dir"
    return 0
  fi
  # Newest major first, by number (so 9.6 comes after 15).
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
    if has_all "$dir"; then
      echo "$dir"
      return 0
    fi
  done
  if initdb=$(command -v initdb) && dir=$(dirname "$(readlink -f "$initdb")") && has_all "$dir"; then
    echo "$dir"
    return 0
  fi
  return 1
}

if dir=$(server_dir); then
  echo "install-postgres: PostgreSQL server present in $dir"
else
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-postgres: PostgreSQL is missing and installing it needs root:" \
      "apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "install-postgres: PostgreSQL server missing; installing Debian's postgresql package"
  bash "$(dirname "$0")/apt-install.sh" postgresql
  if ! dir=$(server_dir); then
    echo "install-postgres: installed the postgresql package but found no directory with" \
      "${required[*]}" >&2
    exit 1
  fi
  echo "install-postgres: PostgreSQL server installed in $dir"
fi

# As root, the kit runs the server as the `postgres` user that the package creates.
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  echo "install-postgres: no 'postgres' user; tests running as root cannot start PostgreSQL" \
    "(reinstall postgresql-common to create it)" >&2
  exit 1
fi
