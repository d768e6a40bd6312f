#!/.mcpg/busybox sh
# `cargo xtask vm-test`, after the engine tests: the release binary (`target/dist/mcpguard`, the
# very file `cargo xtask dist` packages, at /usr/bin/mcpguard in the guest) runs as the daemon and
# enforces one grant through its own CLI. $1: the backend it must choose ("" = any).
# Prints MCPG-VM-DIST-STEP lines, then `MCPG-VM-DIST ok` or `MCPG-VM-DIST FAIL why`.
set -u
# A reader that died must not end this script silently: the checks below say what happened.
trap "" PIPE
expect=$1
d=/run/mcpg-dist
M=/usr/bin/mcpguard
export MCPGUARD_SOCKET=$d/mcpguard.sock
mkdir -p $d
dpid=
step() { echo "MCPG-VM-DIST-STEP up=$(cut -d' ' -f1 /proc/uptime) $*"; }
fail() {
	echo "MCPG-VM-DIST FAIL $*"
	echo "--- daemon log:"
	tail -n 30 $d/daemon.log
	echo "--- governed shell output:"
	cat $d/out 2>/dev/null
	[ -z "$dpid" ] || kill "$dpid" 2>/dev/null
	exit 1
}
# until_ok CMD WHAT [SECONDS]: CMD succeeds within SECONDS (default 60) while the daemon runs.
until_ok() {
	i=0
	until eval "$1"; do
		i=$((i + 1))
		[ $i -le $((${3:-60} * 4)) ] || fail "$2 within ${3:-60} s"
		kill -0 "$dpid" 2>/dev/null || fail "the daemon exited: $2"
		sleep 0.25
	done
}

step "daemon $($M --version)"
$M daemon --state-dir $d/state --audit-log $d/audit.jsonl --metrics off --unload-on-exit >$d/daemon.log 2>&1 &
dpid=$!
# Loading and attaching the programs takes 50-70 s under TCG (trampolines; seconds on hardware).
until_ok "$M status --json >$d/status.json 2>$d/status.err" "status did not answer" 240
backend=$(sed -n 's/.*"backend": *"\([a-z_]*\)".*/\1/p' $d/status.json | head -n1)
[ -z "$expect" ] || [ "$backend" = "$expect" ] || fail "the daemon chose backend ${backend:-?}, expected $expect"
step "daemon up, backend $backend"

# A governed shell that waits on its stdin (a FIFO, opened by this ungoverned shell) for the grant,
# then runs one granted and one ungranted binary. Its own opens and execs are governed, so it uses
# builtins otherwise.
mkfifo $d/go
$M exec --session vm-dist -- /bin/sh -c \
	'read -r x; /usr/bin/true; echo "true rc=$?"; /usr/bin/head -c0 /dev/null; echo "head rc=$?"' \
	<$d/go >$d/out 2>&1 &
epid=$!
exec 3>$d/go
until_ok "$M status --json 2>/dev/null | grep -q '\"vm-dist\"'" "session vm-dist was not registered"
$M grant --session vm-dist --task t1 --allow-exec /usr/bin/true --ttl 5m >$d/grant.out 2>&1 ||
	fail "mcpguard grant failed: $(cat $d/grant.out)"
step "granted exec /usr/bin/true to session vm-dist"
echo go >&3
exec 3>&-
wait $epid
rc=$?
grep -q '^true rc=0$' $d/out || fail "the granted exec /usr/bin/true did not run (exec rc $rc)"
if [ "$backend" = kill ]; then
	grep -q '^head rc=137$' $d/out || fail "the exec of /usr/bin/head (not granted) was not killed"
	how=killed
else
	grep -q '^head rc=126$' $d/out || fail "the exec of /usr/bin/head (not granted) was not refused"
	grep -q 'Operation not permitted' $d/out || fail "no EPERM for the refused exec"
	how="refused with EPERM"
fi
step "granted exec ran, ungranted exec $how (session exit $rc)"
until_ok "grep -E '\"action\":\"(denied|killed)\"' $d/audit.jsonl | grep -q '\"session\":\"vm-dist\"'" \
	"no refusal for session vm-dist in the audit log"
kill -TERM "$dpid"
wait "$dpid"
rc=$?
[ $rc = 0 ] || fail "the daemon exited $rc on SIGTERM"
dpid=
[ ! -e /sys/fs/bpf/mcpguard ] || fail "/sys/fs/bpf/mcpguard left after a stop with --unload-on-exit"
step "audit has the denial; daemon stopped, nothing left pinned"
echo "MCPG-VM-DIST ok"
