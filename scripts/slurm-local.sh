#!/usr/bin/env bash
# A one-node SLURM cluster on this machine: what the `slurm` tests and CI run on, and a way to try
# the cluster path (sbatch, srun, submitit sweeps, preemption) before using a real cluster.
#
#   scripts/slurm-local.sh up     [STATE_DIR]   install what is missing, write the config, start
#   scripts/slurm-local.sh status [STATE_DIR]   say whether it runs (exit 0) or not (exit 1)
#   scripts/slurm-local.sh down   [STATE_DIR]   cancel its jobs, stop the daemons
#   scripts/slurm-local.sh ports  [STATE_DIR]   the slurmctld and slurmd ports it uses (or would)
#
# STATE_DIR (default: $SLURM_LOCAL_DIR, else ${TMPDIR:-/tmp}/gaitgl-slurm) holds the munge key,
# slurm.conf, spool dirs and logs; nothing outside it is configured. Clients find the cluster
# through SLURM_CONF: `export SLURM_CONF=<STATE_DIR>/slurm.conf` (printed by `up` and `status`).
# Every command is idempotent. It needs root (the packages, and slurmd starting jobs); Debian or
# Ubuntu for the installation (Debian's slurmctld, slurmd, slurm-client and munge packages).
# Exit codes: 0 done, 1 not running (status), 2 usage, 3 cannot start here (reason on stderr).
set -euo pipefail

cmd="${1:-}"
state="${2:-${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/gaitgl-slurm}}"
conf="$state/slurm.conf"
host="$(hostname -s)"
cpus="${SLURM_LOCAL_CPUS:-2}"
# A requeued job waits AuthInfo's cred_expire (120 s by default) before it may start again;
# 10 s keeps the preemption test short and is still ample to launch a step on one node.
cred_expire="${SLURM_LOCAL_CRED_EXPIRE:-10}"

die() { echo "slurm-local: $*" >&2; exit 3; }

# Ports: SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_D_PORT when given; else those this state dir's config
# already names, or SLURM's 6817 / 6818, when nothing listens there; else free ones picked by the
# kernel. So a second local cluster (another STATE_DIR) gets its own ports instead of failing on
# the first one's.
port_free() {
    python3 - "$1" 2>/dev/null <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons bind
s.bind(("0.0.0.0", int(sys.argv[1])))
PY
}
any_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])'
}
choose_port() {  # given, key in slurm.conf, default, a port taken already
    local given="$1" key="$2" default="$3" taken="$4" p
    if [[ -n "$given" ]]; then echo "$given"; return 0; fi
    for p in $( [[ -f "$conf" ]] && sed -n "s/^$key=//p" "$conf" ) "$default"; do
        if [[ "$p" != "$taken" ]] && port_free "$p"; then echo "$p"; return 0; fi
    done
    while :; do
        p="$(any_free_port)"
        if [[ "$p" != "$taken" ]]; then echo "$p"; return 0; fi
    done
}
choose_ports() {  # sets ctld_port, d_port
    ctld_port="$(choose_port "${SLURM_LOCAL_CTLD_PORT:-}" SlurmctldPort 6817 "")"
    d_port="$(choose_port "${SLURM_LOCAL_D_PORT:-}" SlurmdPort 6818 "$ctld_port")"
}
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    local tool pkg
    for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
        tool="${pair%%:*}" pkg="${pair##*:}"
        command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; run as root to install them (apt-get)"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    echo "slurm-local: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed (no package mirror reachable?)"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

write_config() {
    mkdir -p "$state"/{munge,run,ctld,spool,log}
    chmod 700 "$state/munge"
    chmod 755 "$state" "$state/run"
    if [[ ! -s "$state/munge/munge.key" ]]; then
        head -c 1024 /dev/urandom > "$state/munge/munge.key.tmp"
        chmod 400 "$state/munge/munge.key.tmp"
        mv "$state/munge/munge.key.tmp" "$state/munge/munge.key"
    fi
    local mem_mb
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    choose_ports
    cat > "$conf.tmp" <<CONF
# Written by scripts/slurm-local.sh: one node, this host, state under $state.
ClusterName=gaitgl-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/run/munge.socket,cred_expire=$cred_expire
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$conf.tmp" "$conf"
}

wait_idle() {
    local i state_now
    for i in $(seq 1 60); do
        state_now="$(SLURM_CONF="$conf" sinfo -h -n "$host" -o %T 2>/dev/null || true)"
        case "$state_now" in
            idle*|mixed*|alloc*|allocated*) return 0 ;;
            down*|drain*|drained*|fail*)
                SLURM_CONF="$conf" scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node did not become idle (state '${state_now:-none}'); see $state/log/"
}

up() {
    install_packages
    [[ $EUID -eq 0 ]] || die "the daemons need root (slurmd starts jobs as their users)"
    if alive "$state/munged.pid" && alive "$state/slurmctld.pid" && alive "$state/slurmd.pid"; then
        wait_idle
        echo "slurm-local: already up; export SLURM_CONF=$conf"
        return 0
    fi
    write_config
    alive "$state/munged.pid" || munged --key-file="$state/munge/munge.key" \
        --socket="$state/run/munge.socket" --pid-file="$state/munged.pid" \
        --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed" \
        || die "munged did not start; see $state/log/munged.log"
    alive "$state/slurmctld.pid" || slurmctld -f "$conf" \
        || die "slurmctld did not start; see $state/log/slurmctld.log"
    alive "$state/slurmd.pid" || slurmd -f "$conf" \
        || die "slurmd did not start; see $state/log/slurmd.log"
    wait_idle
    echo "slurm-local: up ($host, $cpus CPUs); export SLURM_CONF=$conf"
}

stop_pid() {  # the daemon of this pid file, SIGTERM then SIGKILL after 10 s
    local file="$1" pid i
    alive "$file" || { rm -f "$file"; return 0; }
    pid="$(cat "$file")"
    kill "$pid"
    for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$file"
}

down() {
    if alive "$state/slurmctld.pid"; then
        SLURM_CONF="$conf" scancel --full --quiet --state=PENDING,RUNNING,SUSPENDED \
            $(SLURM_CONF="$conf" squeue -h -o %i) 2>/dev/null || true
    fi
    stop_pid "$state/slurmd.pid"
    stop_pid "$state/slurmctld.pid"
    stop_pid "$state/munged.pid"
    echo "slurm-local: down"
}

status() {
    local ok=0 name
    for name in munged slurmctld slurmd; do
        if alive "$state/$name.pid"; then echo "$name: running (pid $(cat "$state/$name.pid"))"
        else echo "$name: stopped"; ok=1; fi
    done
    if [[ $ok -eq 0 ]]; then
        SLURM_CONF="$conf" sinfo
        echo "export SLURM_CONF=$conf"
    fi
    return $ok
}

ports() {
    if alive "$state/slurmctld.pid" && [[ -f "$conf" ]]; then
        ctld_port="$(sed -n 's/^SlurmctldPort=//p' "$conf")"
        d_port="$(sed -n 's/^SlurmdPort=//p' "$conf")"
    else
        choose_ports
    fi
    echo "SlurmctldPort=$ctld_port SlurmdPort=$d_port"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    status) status ;;
    ports) ports ;;
    *) echo "usage: $0 up|down|status|ports [STATE_DIR]" >&2; exit 2 ;;
esac
