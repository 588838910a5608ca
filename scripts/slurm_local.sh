#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the `slurm` tests and for trying
# `hydra/launcher=submitit_slurm` without a real cluster.
#
#   bash scripts/slurm_local.sh start    install slurm-wlm + munge if missing (Debian, root), write
#                                        slurm.conf, start munged, slurmctld, slurmd; wait until idle
#   bash scripts/slurm_local.sh status   the daemons and `sinfo`
#   bash scripts/slurm_local.sh stop     stop what `start` started (by pid file), nothing else
#
# Everything lives in $FASTVLM_SLURM_DIR (default /tmp/fastvlm-slurm): slurm.conf, a private
# munged socket, pid files, logs, spool and state. Clients need the config path:
#   export SLURM_CONF=/tmp/fastvlm-slurm/slurm.conf
# The node gets this machine's cores (nproc) and 90% of its memory; partition `debug`,
# select/cons_tres with CR_CPU_Memory and 1 GiB per CPU by default, so 1-CPU array tasks run
# side by side. Runs as root (SlurmUser=root); no cgroups, proctrack/linuxproc.
set -euo pipefail

STATE="${FASTVLM_SLURM_DIR:-/tmp/fastvlm-slurm}"
CONF="$STATE/slurm.conf"
MUNGE_SOCKET="$STATE/munge/munge.socket.2"
HOST="$(hostname -s)"
CTLD_PORT="${FASTVLM_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${FASTVLM_SLURMD_PORT:-6818}"
WAIT_S="${FASTVLM_SLURM_WAIT_S:-60}"

log() { echo "slurm_local: $*" >&2; }

alive() {  # alive PIDFILE: the pid in it runs
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sinfo >/dev/null; then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "slurm-wlm/munge are not installed and cannot be installed here (needs root and apt-get)"
    return 1
  fi
  log "installing slurm-wlm and munge (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  local cpus mem_mb
  cpus="$(nproc)"
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 ))
  mkdir -p "$STATE"/{munge,ctld,slurmd,log}
  chmod 0755 "$STATE"
  cat > "$CONF.tmp" <<EOF
# written by scripts/slurm_local.sh: a one-node test cluster
ClusterName=fastvlm
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerParameters=sched_interval=1,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024 OverSubscribe=NO
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  if alive "$STATE/munged.pid"; then return 0; fi
  # munged wants its key owned by the user it runs as, and private; keep a private copy
  if [[ ! -s "$STATE/munge/munge.key" ]]; then
    if [[ -s /etc/munge/munge.key ]]; then
      cp /etc/munge/munge.key "$STATE/munge/munge.key"
    else
      dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 2>/dev/null
    fi
  fi
  chown root:root "$STATE/munge" "$STATE/munge/munge.key"
  chmod 0700 "$STATE/munge"
  chmod 0400 "$STATE/munge/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
  chmod 0755 "$STATE/munge"  # clients (any user) reach the socket
}

start_slurm() {
  export SLURM_CONF="$CONF"
  if ! alive "$STATE/slurmctld.pid"; then
    slurmctld -f "$CONF"
  fi
  if ! alive "$STATE/slurmd.pid"; then
    slurmd -f "$CONF"
  fi
}

wait_idle() {
  export SLURM_CONF="$CONF"
  local deadline=$(( $(date +%s) + WAIT_S )) state=""
  while (( $(date +%s) < deadline )); do
    state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)"
    case "$state" in
      idle|mixed|allocated) return 0 ;;
      down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  log "node $HOST is not idle after ${WAIT_S}s (state: '${state:-none}'); logs in $STATE/log/"
  tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 2>/dev/null || true
  return 1
}

stop_one() {  # stop_one NAME: TERM the pid in $STATE/NAME.pid, then KILL after 10 s
  local pidfile="$STATE/$1.pid" pid
  [[ -s "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start)
    t0=$(date +%s.%N)
    install_packages
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && alive "$STATE/munged.pid"; then
      log "already running ($STATE)"
    else
      [[ -s "$CONF" ]] && alive "$STATE/slurmctld.pid" || write_conf
      start_munge
      start_slurm
    fi
    wait_idle
    log "node $HOST idle after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s;" \
        "export SLURM_CONF=$CONF"
    ;;
  stop)
    # slurmd first: it ends the job steps it runs; then the controller, then munged
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    log "stopped ($STATE)"
    ;;
  status)
    rc=0
    for d in munged slurmctld slurmd; do
      if alive "$STATE/$d.pid"; then echo "$d: running (pid $(cat "$STATE/$d.pid"))"; else echo "$d: not running"; rc=1; fi
    done
    if [[ $rc == 0 ]]; then SLURM_CONF="$CONF" sinfo; fi
    echo "SLURM_CONF=$CONF"
    exit $rc
    ;;
  *)
    echo "usage: $0 start|stop|status   (state in \$FASTVLM_SLURM_DIR, default /tmp/fastvlm-slurm)" >&2
    exit 2
    ;;
esac
