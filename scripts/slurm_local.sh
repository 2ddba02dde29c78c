#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian's slurm-wlm and munge), for the tests of the slurm paths.
#
#   scripts/slurm_local.sh start    # write a config under $LABCODE_SLURM_DIR (default /tmp/labcode-slurm), start
#                                   # munged, slurmctld and slurmd; prints `export SLURM_CONF=...`
#   scripts/slurm_local.sh stop     # stop the daemons
#
# Needs root (the daemons and the jobs run as root) and the packages: apt-get install slurm-wlm munge.
set -euo pipefail
DIR=${LABCODE_SLURM_DIR:-/tmp/labcode-slurm}
CONF=$DIR/slurm.conf

start() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null \
        || { echo "slurm_local: install slurm-wlm and munge first (apt-get install slurm-wlm munge)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "slurm_local: must run as root" >&2; exit 1; }
    # Already up (another test process started it): keep it, jobs may be running.
    if [ -f "$CONF" ] && SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | grep -q -E "^(idle|mixed|allocated)"; then
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/log" /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chmod 0400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then munged --force; fi
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    cat > "$CONF" <<CONF
ClusterName=labcode
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
# Finished jobs leave slurmctld's table after 4 s. sbatch --wait then polls every 2 s (its poll must come before
# the purge); with the default 300 s it polls after 2, 8, then every 32 s, so a short job was waited for 30 s more.
MinJobAge=4
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    export SLURM_CONF=$CONF
    pkill -x slurmctld 2>/dev/null || true
    pkill -x slurmd 2>/dev/null || true
    sleep 0.5
    slurmctld -f "$CONF"
    slurmd -f "$CONF" -N localhost
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -q -E "^(idle|mixed|allocated)"; then
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "slurm_local: the node did not come up; see $DIR/log" >&2
    exit 1
}

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
