#!/usr/bin/env bash
# jaxfin on every worker of a Cloud TPU VM slice (v4 / v5e / v5p / v6e, one or many hosts), from your machine.
#
#   export TPU_NAME=my-v5p-64 ZONE=us-east5-a PROJECT=my-project
#   launch/tpu_pod.sh setup                      # code + venv + pip install -e '.[tpu]' on all workers
#   launch/tpu_pod.sh run configs/tiny.yaml train.batch_size=256 output_dir=/mnt/shared/runs/smoke \
#     data.cache_dir=/mnt/shared/data_cache     # smoke test; the batch must split over all chips
#   launch/tpu_pod.sh run /mnt/shared/cpt.yaml mesh.fsdp=-1 output_dir=/mnt/shared/runs/cpt
#   launch/tpu_pod.sh logs [WORKER]              # follow a worker's log (default 0); Ctrl-C stops following only
#   launch/tpu_pod.sh stop                       # SIGTERM: checkpoint at the next logged step, then exit 0
#   launch/tpu_pod.sh exec WORKER|all CMD ...    # run CMD in the checkout, venv active (e.g. jaxfin data prepare)
#   launch/tpu_pod.sh sync                       # ship code changes only (the install is editable)
#
# It never creates or deletes TPUs. Create the slice first, e.g.
#   gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
#     --accelerator-type=v5p-64 --version=v2-alpha-tpuv5 [--spot]
# and for --worker=all ssh needs your key in the agent: ssh-add ~/.ssh/google_compute_engine
#
# Environment:
#   TPU_NAME, ZONE, PROJECT  required
#   REPO_URL [BRANCH]        setup/sync clone or update this git repository on the workers; without REPO_URL they
#                            copy this checkout (tracked + untracked, not ignored files) instead
#   REMOTE_DIR               checkout folder on each worker, relative to the home directory (default: jaxfin)
#   SHARED_NFS               e.g. 10.0.0.2:/share (Filestore): setup mounts it on every worker at SHARED_DIR
#   SHARED_DIR               default /mnt/shared
#   INTERNAL_IP=1            ssh over internal IPs (from a VM in the same VPC)
#   FOLLOW=0                 run: don't follow worker 0's log after starting
#   XLA_FLAGS, LIBTPU_INIT_ARGS  passed on to the training processes when set here
#
# output_dir and data.cache_dir must be on storage every worker sees: a TPU VM's disk is its own and is lost with
# the VM. Orbax itself can write gs:// checkpoints, but output_dir is a POSIX path for now, so mount shared storage
# (Filestore via SHARED_NFS above, or a Cloud Storage FUSE mount) and point both there. Process 0 builds missing
# token caches while the other workers wait.
# Spot / preempted slices: recreate the slice, `setup`, then the same `run` command resumes from the newest
# checkpoint.
# The scripts sent to the workers are single-quoted on purpose: they expand there, not here.
# shellcheck disable=SC2016
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="${REMOTE_DIR:-jaxfin}"
BRANCH="${BRANCH:-}"
REPO_URL="${REPO_URL:-}"
SHARED_NFS="${SHARED_NFS:-}"
SHARED_DIR="${SHARED_DIR:-/mnt/shared}"

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

need_env() {
  local v
  for v in TPU_NAME ZONE PROJECT; do
    if [[ -z "${!v:-}" ]]; then
      echo "tpu_pod.sh: set $v (export TPU_NAME=... ZONE=... PROJECT=...)" >&2
      exit 2
    fi
  done
}

# Run a bash script on WORKER (a number, a list such as 1,3, or all). The script travels base64-encoded so no
# quoting survives two shells by accident; values from here are put in front of it with printf %q.
remote() {
  local worker="$1" script="$2"
  # shellcheck disable=SC2046
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker="$worker" $(ip_flag) \
    --command="echo $(printf '%s' "$script" | base64 | tr -d '\n') | base64 -d | bash"
}

ip_flag() {
  if [[ "${INTERNAL_IP:-0}" == 1 ]]; then echo --internal-ip; fi
}

# `NAME=value; ` for each NAME, quoted for bash.
vars() {
  local v
  for v in "$@"; do printf '%s=%q; ' "$v" "${!v}"; done
}

ship_code() {
  if [[ -n "$REPO_URL" ]]; then
    remote all "set -euo pipefail; $(vars REMOTE_DIR REPO_URL BRANCH)"'
      cd "$HOME"
      if [[ -d "$REMOTE_DIR/.git" ]]; then
        git -C "$REMOTE_DIR" fetch -q origin ${BRANCH:+"$BRANCH"}
        git -C "$REMOTE_DIR" checkout -q --detach FETCH_HEAD
      else
        git clone -q ${BRANCH:+--branch "$BRANCH"} "$REPO_URL" "$REMOTE_DIR"
      fi
      echo "$(hostname): $REMOTE_DIR at $(git -C "$REMOTE_DIR" rev-parse --short HEAD)"'
    return
  fi
  local tmp list f
  tmp="$(mktemp -d)"
  list="$tmp/files"
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$ROOT/$f" ]] && printf '%s\0' "$f"; done >"$list"
  COPYFILE_DISABLE=1 tar -C "$ROOT" --null -T "$list" -czf "$tmp/jaxfin-src.tgz"
  echo "copying $(du -h "$tmp/jaxfin-src.tgz" | cut -f1) of $ROOT to every worker"
  # shellcheck disable=SC2046
  gcloud compute tpus tpu-vm scp "$tmp/jaxfin-src.tgz" "$TPU_NAME":jaxfin-src.tgz --zone="$ZONE" --project="$PROJECT" \
    --worker=all $(ip_flag)
  rm -rf "$tmp"
  remote all "set -euo pipefail; $(vars REMOTE_DIR)"'
    cd "$HOME" && mkdir -p "$REMOTE_DIR" && tar -xzf jaxfin-src.tgz -C "$REMOTE_DIR" && rm -f jaxfin-src.tgz
    echo "$(hostname): code in ~/$REMOTE_DIR"'
}

install() {
  remote all "set -euo pipefail; $(vars REMOTE_DIR SHARED_NFS SHARED_DIR)"'
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { sudo apt-get -qq update && sudo apt-get -qq install -y "$@" >/dev/null; }
    if [[ -n "$SHARED_NFS" ]] && ! mountpoint -q "$SHARED_DIR"; then
      command -v mount.nfs >/dev/null || apt_install nfs-common
      sudo mkdir -p "$SHARED_DIR"
      sudo mount -t nfs -o rw,hard "$SHARED_NFS" "$SHARED_DIR"
      [[ -w "$SHARED_DIR" ]] || sudo chmod a+rwx "$SHARED_DIR"
    fi
    cd "$HOME/$REMOTE_DIR"
    py=""
    for c in python3.13 python3.12 python3.11 python3; do   # jaxfin needs Python >= 3.11
      if command -v "$c" >/dev/null && "$c" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
        py="$c"; break
      fi
    done
    if [[ -z "$py" ]]; then   # Ubuntu 22.04 TPU images ship 3.10
      apt_install python3.11 python3.11-venv; py=python3.11
    fi
    if [[ ! -x .venv/bin/python ]]; then
      "$py" -m venv .venv 2>/dev/null || { apt_install "$(basename "$py")-venv"; "$py" -m venv --clear .venv; }
    fi
    .venv/bin/pip install -q -U pip
    .venv/bin/pip install -q -e ".[tpu]"
    echo "$(hostname): $(.venv/bin/python -c "import jax, jaxfin; print(\"jax\", jax.__version__, \"ready\")")"'
}

run() {
  [[ $# -ge 1 ]] || usage
  local tag args passenv="" v
  # shellcheck disable=SC2034  # tag travels through `vars`
  tag="$(date -u +%Y%m%d-%H%M%S)"
  args="$(printf '%q ' "$@")"
  for v in XLA_FLAGS LIBTPU_INIT_ARGS; do
    if [[ -n "${!v:-}" ]]; then passenv+="export $(vars "$v")"; fi
  done
  remote all "set -euo pipefail; $(vars REMOTE_DIR tag) args=($args); $passenv"'
    cd "$HOME/$REMOTE_DIR"
    logs="$HOME/jaxfin-logs"; mkdir -p "$logs"
    if [[ -f "$logs/run.pid" ]] && kill -0 "$(cat "$logs/run.pid")" 2>/dev/null; then
      echo "$(hostname): a run is still going (pid $(cat "$logs/run.pid")); launch/tpu_pod.sh stop first" >&2
      exit 1
    fi
    # jax.distributed from the TPU metadata server, as JAX itself reads it: this worker number, all workers
    # (sorted by worker number, so the first is process 0) -> explicit coordinator / count / id for jaxfin.launch.
    md() { curl -sf -H "Metadata-Flavor: Google" \
      "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"; }
    IFS=, read -r -a workers <<< "$(md worker-network-endpoints || true)"
    if [[ ${#workers[@]} -gt 1 ]]; then
      first="${workers[0]}"; first="${first##*:}"   # entries are "host" or "name:id:ip"
      export JAXFIN_COORDINATOR="$first:8482" JAXFIN_NUM_PROCESSES="${#workers[@]}"
      JAXFIN_PROCESS_ID="$(md agent-worker-number)"; export JAXFIN_PROCESS_ID
    fi
    log="$logs/$tag.log"
    nohup setsid .venv/bin/python -m jaxfin.launch "${args[@]}" >"$log" 2>&1 </dev/null &
    echo $! >"$logs/run.pid"
    ln -sfn "$log" "$logs/latest.log"
    echo "$(hostname): started pid $! (process ${JAXFIN_PROCESS_ID:-0} of ${JAXFIN_NUM_PROCESSES:-1}), log $log"'
  if [[ "${FOLLOW:-1}" == 1 ]]; then
    echo "following worker 0 (Ctrl-C stops following, not training; launch/tpu_pod.sh logs to come back)"
    logs 0
  fi
}

logs() {
  remote "${1:-0}" 'tail -n 200 -F "$HOME/jaxfin-logs/latest.log"'
}

stop() {
  remote all '
    pidfile="$HOME/jaxfin-logs/run.pid"
    if [[ ! -f "$pidfile" ]] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$(hostname): nothing running"; exit 0
    fi
    pid="$(cat "$pidfile")"; kill -TERM "$pid"
    for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "$(hostname): pid $pid still running after 600 s" >&2; exit 1; fi
    echo "$(hostname): stopped"'
}

exec_cmd() {
  [[ $# -ge 2 ]] || usage
  local worker="$1"
  shift
  remote "$worker" "set -euo pipefail; $(vars REMOTE_DIR) cmd=($(printf '%q ' "$@"))"'
    cd "$HOME/$REMOTE_DIR" && source .venv/bin/activate && "${cmd[@]}"'
}

mode="${1:-}"
[[ -n "$mode" ]] || usage
shift
case "$mode" in
  -h | --help | help) usage 0 ;;
  setup | sync | run | logs | stop | exec) need_env ;;
  *)
    echo "tpu_pod.sh: unknown mode '$mode'" >&2
    usage
    ;;
esac
case "$mode" in
  setup)
    ship_code
    install
    ;;
  sync) ship_code ;;
  run) run "$@" ;;
  logs) logs "$@" ;;
  stop) stop ;;
  exec) exec_cmd "$@" ;;
esac
