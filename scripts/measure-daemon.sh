#!/usr/bin/env bash
# The daemon's footprint (the DaemonSet's requests and limits come from it): RSS after start
# and its peak (VmHWM), CPU at idle over 20 s, CPU and RSS over N grants back to back through
# the CLI to one registered session. A private socket, state, bpffs directory and net cgroup,
# all removed at the end. Root. Usage: scripts/measure-daemon.sh [BINARY] [N]
# (default: the static release binary, target/x86_64-unknown-linux-musl/release/mcpguard; 2000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-musl/release/mcpguard}
N=${2:-2000}
D=$(mktemp -d /tmp/mcpg-measure.XXXX)
BPF=/sys/fs/bpf/mcpguard-measure-$$
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
CG=$cg2/mcpguard-measure-$$
mkdir "$CG" "$D/policies"
printf 'name = "test-baseline"\n[[read]]\npath = "/etc/ld.so.cache"\n[[read]]\npath = "/usr/lib"\n[[read]]\npath = "/dev/null"\n[[read]]\npath = "/proc"\n' >"$D/policies/test-baseline.toml"
"$B" --socket "$D/ctl.sock" daemon --state-dir "$D/state" --audit-log "$D/audit.jsonl" --bpffs-dir "$BPF" \
  --policy-dir "$D/policies" --net-cgroup "$CG" --metrics off 2>"$D/daemon.log" &
P=$!
S=
cleanup() {
  [[ -n $S ]] && kill "$S" 2>/dev/null
  kill "$P" 2>/dev/null; wait "$P" 2>/dev/null || true
  "$B" unpin --bpffs-dir "$BPF" >/dev/null || true
  rmdir "$CG" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
until [[ -S $D/ctl.sock ]]; do sleep 0.1; done
tck=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$P/stat"; }
mem() { awk '/VmRSS|VmHWM/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$P/status"; }
echo "after start: $(mem)"
sleep 5
c0=$(cpu); sleep 20; c1=$(cpu)
echo "idle 20 s: $((c1 - c0)) ticks of 1/$tck s ($(echo "scale=2; ($c1 - $c0) * 100 / $tck / 20" | bc)% of a CPU); $(mem)"
mkfifo "$D/in"; exec 3<>"$D/in"
"$B" --socket "$D/ctl.sock" exec --session m --baseline test-baseline -- /usr/bin/dash -c 'read x' <"$D/in" >/dev/null &
S=$!
until "$B" --socket "$D/ctl.sock" status --json | grep -q '"name": *"m"'; do sleep 0.1; done
c0=$(cpu); t0=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  "$B" --socket "$D/ctl.sock" grant --session m --task "t$i" --allow-exec /usr/bin/cat --allow-read /etc/hostname --ttl 5m >/dev/null
done
t1=$(date +%s.%N); c1=$(cpu)
wall=$(echo "$t1 - $t0" | bc)
echo "$N grants: wall ${wall} s, daemon CPU $(echo "scale=2; ($c1 - $c0) / $tck" | bc) s ($(echo "scale=2; ($c1 - $c0) / $tck / $wall" | bc) CPU); $(mem)"
