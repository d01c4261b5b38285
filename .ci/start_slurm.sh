#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_slurm.py (CI calls this from .ci/run).
#
# Debian 12's Slurm 22.05 with accounting: munged, MariaDB, slurmdbd, slurmctld and slurmd, all
# started by hand (no systemd, no cgroups). Accounting makes Snakemake's Slurm executor plugin run
# unchanged, as on a real cluster: it tracks jobs with `sacct`, and without slurmdbd it hangs
# forever on a finished job. The node gets a fake GPU (`Gres=gpu:1`, backed by /dev/null) so that
# GPU-resourced rules schedule here and a test can read what they asked for.
#
# Safe to run twice: it installs only what is missing, rewrites a config only when it changed,
# starts only daemons that are not answering, and always ends by waiting until the node is idle.
#
#   bash .ci/start_slurm.sh            # then: sinfo, sbatch, sacct ...
#
# Settings tests can rely on (exported names are printed at the end):
#   partition "debug" (the default), account "r1zero-ci" (root may use it), cluster "r1zero-ci".
set -euo pipefail

CLUSTER=r1zero-ci
PARTITION=debug
ACCOUNT=r1zero-ci
NODE=$(hostname -s)
ETC=/etc/slurm
STATE=/var/lib/slurm
LOGS=/var/log/slurm
DB_PASSWORD=r1zero-ci-local  # MariaDB listens on this machine only; the user exists for slurmdbd
READY_TIMEOUT_S=60

log() { echo "start_slurm: $*"; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        # Recommends would pull mail servers and documentation; the daemons need none of them.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Write $2 to $1 only when it differs; returns 0 when the file changed.
write_if_changed() {
    local path=$1 text=$2
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$text" ]]; then
        return 1
    fi
    printf '%s\n' "$text" >"$path"
    return 0
}

wait_for() {  # wait_for <what> <command...>: poll until the command succeeds
    local what=$1
    shift
    for _ in $(seq 1 $((READY_TIMEOUT_S * 2))); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    log "ERROR: $what not ready after ${READY_TIMEOUT_S}s"
    return 1
}

start_munge() {
    if munge -n </dev/null >/dev/null 2>&1; then
        return 0
    fi
    # /run is empty after a boot; munged refuses a socket directory it does not own.
    install -d -o munge -g munge -m 0755 /run/munge
    [[ -f /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    wait_for munged munge -n
}

start_mariadb() {
    if mariadb-admin --silent ping >/dev/null 2>&1; then
        return 0
    fi
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    log "starting mariadbd"
    # Detached from this shell so it outlives the script; its own log says why if it stops.
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
        >/var/log/mariadbd-ci.log 2>&1 </dev/null &
    wait_for mariadbd mariadb-admin --silent ping
}

create_database_user() {
    # root reaches MariaDB through its unix socket; slurmdbd logs in as this user.
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

write_configs() {
    install -d -m 0755 "$ETC" "$STATE" "$LOGS"
    # What slurmd finds on this machine (CPUs, sockets, memory), so the node is never "invalid".
    local hardware
    hardware=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*//")
    CHANGED=0
    write_if_changed "$ETC/slurm.conf" "# Written by .ci/start_slurm.sh: a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No systemd or cgroups here: track processes by parent id, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Share the node between jobs by cores and memory. Without DefMemPerCPU a job that names no
# memory takes the whole node, and jobs run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# Finished jobs stay visible to squeue/scontrol for 5 minutes.
MinJobAge=300
ReturnToService=2
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# Record GPU requests, so that sacct's ReqTRES shows gres/gpu=N, and each job's --comment (the
# executor plugin writes the rule name there).
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=$NODE$hardware Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP" && CHANGED=1
    # The fake GPU: a device file that exists, so GPU requests schedule on a CPU machine.
    write_if_changed "$ETC/gres.conf" "NodeName=$NODE Name=gpu File=/dev/null" && CHANGED=1
    write_if_changed "$ETC/slurmdbd.conf" "AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db" && CHANGED=1
    # slurmdbd refuses a config (it holds a password) that others can read.
    chmod 0600 "$ETC/slurmdbd.conf"
    if ((CHANGED)); then log "config written under $ETC"; fi
}

start_slurmdbd() {
    if sacctmgr -n show cluster >/dev/null 2>&1; then
        return 0
    fi
    log "starting slurmdbd"
    slurmdbd
    wait_for slurmdbd sacctmgr -n show cluster
}

register_accounts() {
    # The cluster before slurmctld starts, so it registers at once; an account and root in it,
    # so the executor plugin's account check (sacctmgr) accepts --slurm-account.
    sacctmgr -n -P show cluster format=cluster | grep -x "$CLUSTER" >/dev/null ||
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -n -P show account format=account | grep -x "$ACCOUNT" >/dev/null ||
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="r1zero CI" organization=r1zero >/dev/null
    sacctmgr -n -P show assoc where user=root account="$ACCOUNT" format=user | grep -x root >/dev/null ||
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
}

start_slurm_daemons() {
    if scontrol ping 2>/dev/null | grep "is UP" >/dev/null; then
        if ((CHANGED)); then
            log "config changed: restarting slurmctld and slurmd"
            scontrol shutdown >/dev/null
            wait_for "slurmctld to stop" bash -c '! scontrol ping | grep -q "is UP"'
            sleep 1
        else
            return 0
        fi
    fi
    log "starting slurmctld and slurmd"
    # -i: go on past unreadable state files left by an earlier cluster on this machine.
    slurmctld -i
    wait_for slurmctld bash -c 'scontrol ping | grep -q "is UP"'
    slurmd
}

node_idle() {
    local state
    state=$(sinfo -h -n "$NODE" -o %t)
    if [[ $state == idle || $state == mix || $state == alloc ]]; then
        return 0
    fi
    # A node that went down (slurmd restarted) comes back with ReturnToService=2; resume covers
    # an explicit drain from an earlier run.
    [[ $state == drain* || $state == down* ]] && scontrol update nodename="$NODE" state=resume >/dev/null 2>&1
    return 1
}

main() {
    local start_s=$SECONDS
    install_packages
    start_munge
    start_mariadb
    create_database_user
    write_configs
    start_slurmdbd
    register_accounts
    start_slurm_daemons
    wait_for "node $NODE idle" node_idle
    log "ready in $((SECONDS - start_s))s: partition=$PARTITION account=$ACCOUNT node=$NODE ($(sinfo -h -n "$NODE" -o '%c CPUs, %m MB, %G'))"
}

main "$@"
