#!/bin/bash
# A real single-node SLURM on this machine, to try the recipes in cluster/ (and for the test suite's `slurm`
# tier): munged, slurmctld and slurmd on 127.0.0.1, configured from scratch in one folder.
#
#   bash cluster/local_slurm.sh start     # prints the `export SLURM_CONF=...` the client commands need
#   bash cluster/local_slurm.sh status
#   bash cluster/local_slurm.sh stop      # stops only the daemons this script started (by their pid files)
#
# It installs nothing: Debian's packages `slurm-wlm` and `munge` must be there (`apt-get install slurm-wlm
# munge`). Everything lives in LOCAL_SLURM_DIR (default /tmp/mri_gan_slurm): slurm.conf, the munge key and
# socket, the controller's state, logs and pid files. The node is this host with its CPUs and memory and
# LOCAL_SLURM_GPUS (default 2) GPUs that are counted only, with no device behind them, so the recipes'
# --gpus-per-node requests can be scheduled on a machine without a GPU (the trainers then run with
# --device cpu). JobRequeue=1; the ports are LOCAL_SLURM_PORT (default 6817) and the next one.
set -euo pipefail

dir=${LOCAL_SLURM_DIR:-/tmp/mri_gan_slurm}
port=${LOCAL_SLURM_PORT:-6817}
gpus=${LOCAL_SLURM_GPUS:-2}
conf=$dir/slurm.conf
node=$(hostname -s)

die() { echo "local_slurm.sh: $*" >&2; exit 2; }

running() {  # running NAME: the daemon whose pid file is in $dir is alive
    local pid
    pid=$(cat "$dir/$1.pid" 2> /dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null
}

write_config() {
    local cpus mem
    cpus=$(nproc --all)
    mem=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024))  # MB, less 1 GB for the system
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    cat > "$conf" << EOF
# Written by cluster/local_slurm.sh: a single-node cluster on this machine.
ClusterName=local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=${LOCAL_SLURM_CRED_EXPIRE:-5}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
JobRequeue=1
ReturnToService=2
MinJobAge=3600
KillWait=30
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$gpus State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    # slurmd drops a GPU without a device file: plain files stand in for the devices (nothing opens them).
    mkdir -p "$dir/dev"
    local i
    for i in $(seq 0 $((gpus - 1))); do : > "$dir/dev/gpu$i"; done
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/gpu[0-%d]\n' "$node" "$dir" $((gpus - 1)) > "$dir/gres.conf"
    echo "# no cgroup plugin is used (proctrack/linuxproc, task/none)" > "$dir/cgroup.conf"
}

start() {
    command -v slurmctld > /dev/null && command -v munged > /dev/null \
        || die "slurmctld or munged not found: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)"
    if running slurmctld && running slurmd; then
        echo "already running"; echo "export SLURM_CONF=$conf"; return
    fi
    write_config
    if ! running munged; then
        [ -f "$dir/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"; }
        munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"
    fi
    export SLURM_CONF=$conf
    running slurmctld || slurmctld -f "$conf" -c   # -c: a fresh start, without the jobs and node states of an earlier one
    running slurmd || slurmd -f "$conf"
    local deadline=$((SECONDS + 60)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo -h -n "$node" -o %t 2> /dev/null || true)
        case $state in idle|mix|alloc) echo "node $node: $state"; echo "export SLURM_CONF=$conf"; return ;; esac
        sleep 1
    done
    die "the node did not become idle within 60 s (sinfo says '${state:-nothing}'); see $dir/log/"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(cat "$dir/$name.pid" 2> /dev/null) || continue
        [ -n "$pid" ] || continue
        kill "$pid" 2> /dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
    done
    echo "stopped"
}

status() {
    local name code=0
    for name in munged slurmctld slurmd; do
        if running "$name"; then echo "$name: running (pid $(cat "$dir/$name.pid"))"; else echo "$name: not running"; code=3; fi
    done
    [ $code = 0 ] && SLURM_CONF=$conf sinfo -N -o "%N %t %c %G" || true
    return $code
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: bash cluster/local_slurm.sh start|stop|status" ;;
esac
