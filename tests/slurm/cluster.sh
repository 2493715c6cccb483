#!/usr/bin/env bash
# A real one-node SLURM 22.05 cluster on 127.0.0.1 for fsgen's tests.
#
#   bash tests/slurm/cluster.sh start    # install packages (once), write configs, start daemons
#   bash tests/slurm/cluster.sh stop     # stop exactly the daemons that `start` started
#   bash tests/slurm/cluster.sh status   # exit 0 when every daemon is running
#   source "$FSGEN_SLURM_DIR/env.sh"     # then sinfo/sbatch/sacct talk to this cluster
#
# Daemons: munged -> mariadbd (--skip-networking) -> slurmdbd -> slurmctld -> slurmd, each run in
# the foreground under `start-stop-daemon --background --make-pidfile`, so the PID files hold
# exactly the processes we started and `stop` signals only those (matched by PID *and* binary).
# All state (configs, spool, database, logs, munge key, fake GPU devices) lives under
# $FSGEN_SLURM_DIR (default /tmp/fsgen-slurm). The daemons read their configs there through
# SLURM_CONF; ports are non-default (2681x) and munge uses its own socket and key, so nothing
# else on the machine is used. The one file written outside is the symlink
# /etc/slurm/slurm.conf -> $FSGEN_SLURM_DIR/etc/slurm.conf (removed by `stop`): the
# snakemake-executor-plugin-slurm job step strips SLURM_CONF from the environment of its inner
# `srun`, which then only finds the default path. `start` refuses to replace a real file there.
# Must run as root (daemons run as root/munge/mysql; the fake GPUs are made with mknod).
# Both commands are idempotent.
set -euo pipefail

D="${FSGEN_SLURM_DIR:-/tmp/fsgen-slurm}"
CLUSTER=fsgentest           # ClusterName; also the table prefix in slurmdbd's database
ACCOUNT=fsgen               # the account linked to the current user (the plugin checks it)
PARTITION=debug             # the only partition (Default=YES)
CTLD_PORT=26817             # non-default ports: no clash with a real SLURM on the machine
SLURMD_PORT=26818
DBD_PORT=26819
NODE="$(hostname -s)"       # slurmctld insists that SlurmctldHost is this machine's name
RUN_USER="$(id -un)"        # jobs are submitted as this user (root in CI)
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

log() { echo "[fsgen-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

export SLURM_CONF="$D/etc/slurm.conf"
export MYSQL_UNIX_PORT="$D/mysql/mysqld.sock"   # slurmdbd's MariaDB client connects here

# ---------------------------------------------------------------------------------- packages
install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------- configs
# Memory/CPU layout copied from `slurmd -C` so that slurmd registers without a mismatch.
node_layout() {
  slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' '
}

write_configs() {
  mkdir -p "$D"/{etc,run,log,spool/ctld,spool/d,dev}
  chmod 0755 "$D" "$D/etc" "$D/run" "$D/log"
  # Fake GPUs: SLURM needs a character device per GPU (it drops file-less GPUs and rejects
  # plain files); c 1 3 is /dev/null's device number, so nothing real is exposed.
  for i in 0 1; do
    [ -c "$D/dev/nvidia$i" ] || { rm -f "$D/dev/nvidia$i"; mknod "$D/dev/nvidia$i" c 1 3; }
  done
  local layout; layout="$(node_layout)"
  local tmp="$D/etc/.slurm.conf.tmp"
  cat > "$tmp" <<EOF
# Written by tests/slurm/cluster.sh: one-node test cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
CredType=cred/munge
# bind to 127.0.0.1 (what the node name resolves to) instead of INADDR_ANY
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/d
SlurmctldPidFile=$D/run/slurmctld.own.pid
SlurmdPidFile=$D/run/slurmd.own.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no systemd/cgroups here: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
# backfill every 2 s: a CPU job waiting behind a GPU-blocked job starts at once
SchedulerParameters=bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# accounting through slurmdbd: the executor plugin polls sacct for job states
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for slurmdbd connections the munge socket is given here, not by AuthInfo
AccountingStoragePass=$D/munge/munge.socket
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
# keep sbatch --comment (the plugin writes rule_<name>_<wildcards> there) for sacct
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# short kill grace so that TIMEOUT tests do not wait 30 s
KillWait=5
OverTimeLimit=0
MinJobAge=300
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 $layout Gres=gpu:2 State=UNKNOWN
# DefMemPerCPU: a job without --mem must not take the whole node (two jobs run at once)
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE DefMemPerCPU=1024 State=UP
EOF
  mv "$tmp" "$D/etc/slurm.conf"

  cat > "$D/etc/.gres.conf.tmp" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$D/dev/nvidia[0-1]
EOF
  mv "$D/etc/.gres.conf.tmp" "$D/etc/gres.conf"

  # slurmdbd.conf must be 0600 and owned by SlurmUser; it holds the database login.
  ( umask 077
    cat > "$D/etc/.slurmdbd.conf.tmp" <<EOF
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.own.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=${CLUSTER}_acct_db
EOF
  )
  mv "$D/etc/.slurmdbd.conf.tmp" "$D/etc/slurmdbd.conf"

  cat > "$D/env.sh" <<EOF
# source this to talk to the fsgen test cluster
export SLURM_CONF=$D/etc/slurm.conf
EOF
}

# ---------------------------------------------------------------------------------- daemons
pidfile() { echo "$D/run/$1.pid"; }

running() {  # running NAME BINARY: the process in our PID file is alive and is BINARY
  [ -f "$(pidfile "$1")" ] && start-stop-daemon --status --pidfile "$(pidfile "$1")" --exec "$2"
}

launch() {  # launch NAME BINARY [start-stop-daemon options --] ARGS...: foreground daemon, backgrounded
  local name="$1" bin="$2"; shift 2
  if running "$name" "$bin"; then log "$name already running (pid $(cat "$(pidfile "$name")"))"; return 0; fi
  rm -f "$(pidfile "$name")"
  start-stop-daemon --start --background --make-pidfile --pidfile "$(pidfile "$name")" \
    --output "$D/log/$name.out" --exec "$bin" "$@"
  log "started $name (pid $(cat "$(pidfile "$name")"))"
}

wait_for() {  # wait_for WHAT SECONDS LOG COMMAND...: poll COMMAND until it succeeds
  local what="$1" secs="$2" logf="$3"; shift 3
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      log "$what not ready after ${secs}s; last lines of $logf:"
      tail -n 30 "$logf" >&2 2>/dev/null || true
      die "$what did not start (state in $D)"
    fi
    sleep 0.5
  done
}

start_munge() {
  mkdir -p "$D/munge"; chown munge:munge "$D/munge"; chmod 0755 "$D/munge"
  if [ ! -s "$D/munge/munge.key" ]; then   # own key: /etc/munge is not touched
    ( umask 077; dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none )
    chown munge:munge "$D/munge/munge.key"; chmod 0400 "$D/munge/munge.key"
  fi
  launch munged /usr/sbin/munged --chuid munge -- --foreground \
    --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" \
    --log-file="$D/munge/munged.log" --pid-file="$D/munge/munged.own.pid" \
    --seed-file="$D/munge/munged.seed"
  wait_for munged 20 "$D/munge/munged.log" \
    bash -c "munge -n -S '$D/munge/munge.socket' | unmunge -S '$D/munge/munge.socket'"
}

start_mariadb() {
  local db="$D/mysql"
  if [ ! -d "$db/data/mysql" ]; then
    rm -rf "$db"; mkdir -p "$db/data"; chown -R mysql:mysql "$db"
    mariadb-install-db --no-defaults --datadir="$db/data" --user=mysql \
      --auth-root-authentication-method=socket --skip-test-db >"$D/log/mariadb-install.log" 2>&1 \
      || { tail -n 20 "$D/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  chown mysql:mysql "$db"
  # root@localhost authenticates by unix socket: slurmdbd (running as root) needs no password.
  launch mariadbd /usr/sbin/mariadbd -- --no-defaults --user=mysql --datadir="$db/data" \
    --socket="$db/mysqld.sock" --pid-file="$db/mariadbd.own.pid" --skip-networking \
    --log-error="$D/log/mariadb.log" --innodb-buffer-pool-size=64M \
    --innodb-lock-wait-timeout=900
  wait_for mariadbd 60 "$D/log/mariadb.log" mariadb-admin --no-defaults --socket="$db/mysqld.sock" ping
}

start_slurmdbd() {
  launch slurmdbd /usr/sbin/slurmdbd -- -D
  wait_for slurmdbd 60 "$D/log/slurmdbd.log" sacctmgr -n -P list cluster
}

add_associations() {
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="fsgen tests" organization=fsgen >/dev/null
  # the plugin validates the account with `sacctmgr -n -s list user <user>`
  sacctmgr -n -P -s list user "$RUN_USER" format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add user "$RUN_USER" account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

start_slurm() {
  launch slurmctld /usr/sbin/slurmctld -- -D -i
  wait_for slurmctld 30 "$D/log/slurmctld.log" bash -c "scontrol ping | grep -q UP"
  launch slurmd /usr/sbin/slurmd -- -D -N "$NODE"
  wait_for slurmd 30 "$D/log/slurmd.log" bash -c "[ -n \"\$(sinfo -h -n $NODE -o %T | grep -v -E 'unk|not_responding|down\\*')\" ]"
  case "$(node_state)" in
    drain*|down*) log "node is $(node_state): resuming"
                  scontrol update nodename="$NODE" state=resume ;;
  esac
  wait_for "node $NODE idle" 30 "$D/log/slurmctld.log" bash -c "sinfo -h -n $NODE -o %T | grep -q -E '^(idle|mixed|allocated)'"
}

DEFAULT_CONF=/etc/slurm/slurm.conf

link_default_conf() {  # srun inside jobs ignores SLURM_CONF (see top): point the default path here
  if [ -e "$DEFAULT_CONF" ] && [ ! -L "$DEFAULT_CONF" ]; then
    die "$DEFAULT_CONF is a real file (a SLURM installation?); not replacing it"
  fi
  mkdir -p "$(dirname "$DEFAULT_CONF")"
  ln -sfn "$D/etc/slurm.conf" "$DEFAULT_CONF"
}

unlink_default_conf() {
  if [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$D/etc/slurm.conf" ]; then
    rm -f "$DEFAULT_CONF"
  fi
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (daemons, mknod)"
  local t0=$SECONDS
  install_packages
  link_default_conf
  if getent hosts "$NODE" | grep -qv '^127\.'; then
    log "warning: $NODE does not resolve to 127.x; daemons bind to 127.0.0.1 via NodeAddr"
  fi
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  add_associations
  start_slurm
  log "cluster $CLUSTER up in $((SECONDS - t0))s: account=$ACCOUNT partition=$PARTITION gpus=2;" \
      "export SLURM_CONF=$SLURM_CONF"
}

stop_one() {  # stop_one NAME BINARY: TERM, then KILL after 30 s, only our PID
  local name="$1" bin="$2" pf; pf="$(pidfile "$1")"
  [ -f "$pf" ] || return 0
  if running "$name" "$bin"; then
    start-stop-daemon --stop --quiet --pidfile "$pf" --exec "$bin" --retry TERM/30/KILL/5 || true
    log "stopped $name"
  fi
  rm -f "$pf"
}

cmd_stop() {
  if [ -f "$SLURM_CONF" ] && running slurmctld /usr/sbin/slurmctld; then
    # cancel leftover jobs so that no slurmstepd outlives its slurmd
    local jobs; jobs="$(squeue -h -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
      log "cancelling jobs: $(echo $jobs)"
      scancel $jobs || true
      for _ in $(seq 1 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  stop_one slurmd /usr/sbin/slurmd
  stop_one slurmctld /usr/sbin/slurmctld
  stop_one slurmdbd /usr/sbin/slurmdbd
  stop_one mariadbd /usr/sbin/mariadbd
  stop_one munged /usr/sbin/munged
  unlink_default_conf
}

cmd_status() {
  local ok=0
  for pair in munged:/usr/sbin/munged mariadbd:/usr/sbin/mariadbd slurmdbd:/usr/sbin/slurmdbd \
              slurmctld:/usr/sbin/slurmctld slurmd:/usr/sbin/slurmd; do
    if running "${pair%%:*}" "${pair#*:}"; then echo "${pair%%:*}: running (pid $(cat "$(pidfile "${pair%%:*}")"))"
    else echo "${pair%%:*}: stopped"; ok=1; fi
  done
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status   (state in \$FSGEN_SLURM_DIR, default /tmp/fsgen-slurm)" >&2; exit 2 ;;
esac
