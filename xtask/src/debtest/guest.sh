#!/bin/sh
# `cargo xtask deb-test`: runs in the Debian 12 guest under systemd (unit mcpg-debtest.service,
# output on ttyS0), from the read-only payload disk /mnt/mcpg (the .deb and this script).
# Every check ends the run with `MCPG-DEB-RESULT FAIL` and what failed; all of them passing
# prints `MCPG-DEB-RESULT PASS`. Then the guest powers off.
set -u
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive

up() { cut -d' ' -f1 /proc/uptime; }
step() { echo "MCPG-DEB-STEP up=$(up) $*"; }
finish() {
	echo "MCPG-DEB-RESULT $1 up=$(up)"
	sync
	systemctl poweroff -ff
	exit 0
}
fail() {
	echo "MCPG-DEB-FAIL $*"
	echo "--- journal of mcpguard.service:"
	journalctl -u mcpguard.service --no-pager -n 40 2>&1
	echo "--- governed shell output:"
	cat /run/mcpg-out 2>/dev/null
	finish FAIL
}

state=$(systemctl is-system-running --wait)
step "booted: system $state, kernel $(uname -r), lsm $(cat /sys/kernel/security/lsm)"
case ",$(cat /sys/kernel/security/lsm)," in *,bpf,*) ;; *) fail "bpf is not in the active LSM list: the lsm backend cannot be expected" ;; esac

# --- install with apt, offline (no network in the guest; the package has no missing dependency)
cp /mnt/mcpg/mcpguard_*.deb /var/tmp/ && chmod 0644 /var/tmp/mcpguard_*.deb
deb=$(ls /var/tmp/mcpguard_*.deb)
apt-get install -y --no-install-recommends "$deb" >/var/tmp/apt.log 2>&1 || { cat /var/tmp/apt.log; fail "apt-get install $deb failed"; }
step "installed $(dpkg-query -W -f '${Package} ${Version} ${Status}' mcpguard)"

# The postinst enabled and started it; the daemon answers once it has loaded its programs.
systemctl is-enabled --quiet mcpguard.service || fail "mcpguard.service is not enabled after install"
wait_status() {
	i=0
	until mcpguard status --json >/var/tmp/status.json 2>/var/tmp/status.err; do
		i=$((i + 1))
		[ "$i" -le 120 ] || fail "mcpguard status did not answer within 60 s: $(cat /var/tmp/status.err)"
		sleep 0.5
	done
}
wait_status
[ "$(systemctl is-active mcpguard.service)" = active ] || fail "mcpguard.service is not active"
grep -q '"backend": *"lsm"' /var/tmp/status.json || fail "status does not report backend lsm: $(head -c 400 /var/tmp/status.json)"
step "service active, backend lsm"

# --- one governed shell, started now and kept for the whole run: it reads commands from a FIFO
# (its stdin, already open) and reports each one's exit status. Its own opens and execs are
# governed, so it uses builtins and redirections only.
mkfifo /run/mcpg-in
mcpguard exec --session s1 --baseline baseline-minimal -- /bin/sh -c \
	'while read -r c; do eval "$c"; echo "MCPG-G rc=$?"; done' </run/mcpg-in >/run/mcpg-out 2>&1 &
exec 3>/run/mcpg-in
n=0
# g CMD EXPECTED_RC WHAT: run CMD in the governed shell, assert its exit status.
g() {
	n=$((n + 1))
	echo "$1" >&3
	i=0
	while [ "$(grep -c '^MCPG-G rc=' /run/mcpg-out)" -lt "$n" ]; do
		i=$((i + 1))
		[ "$i" -le 200 ] || fail "the governed shell did not run \`$1\` within 20 s"
		sleep 0.1
	done
	rc=$(grep '^MCPG-G rc=' /run/mcpg-out | tail -n1 | cut -d= -f2)
	[ "$rc" = "$2" ] || fail "$3: \`$1\` exited $rc, expected $2"
	step "ok: $3 (\`$1\` rc=$rc)"
}
denied() { # the shell's message for the last command is EPERM's
	tail -n2 /run/mcpg-out | grep -q 'Operation not permitted' || fail "$1: no EPERM ('Operation not permitted') from the shell"
}
g '/usr/bin/true' 126 "baseline only: exec /usr/bin/true refused"
denied "exec before the grant"
mcpguard grant --session s1 --task t1 --allow-exec /usr/bin/true --allow-read /etc/hostname --ttl 10m \
	|| fail "mcpguard grant failed"
g '/usr/bin/true' 0 "granted exec /usr/bin/true runs"
g '/usr/bin/uname' 126 "exec /usr/bin/uname (not granted) refused"
denied "exec outside the grant"
g 'read -r x </etc/hostname' 0 "granted read of /etc/hostname"
g 'read -r x </etc/passwd' 2 "open of /etc/passwd (not granted) refused"
denied "open outside the grant"

# --- restart: the governed shell keeps its session and its grant
systemctl restart mcpguard.service || fail "systemctl restart mcpguard failed"
wait_status
[ "$(systemctl is-active mcpguard.service)" = active ] || fail "mcpguard.service is not active after restart"
grep -q '"s1"' /var/tmp/status.json || fail "session s1 not in status after the restart"
step "restarted, session s1 still known"
g '/usr/bin/uname' 126 "after restart: exec /usr/bin/uname still refused"
g '/usr/bin/true' 0 "after restart: granted exec still runs"
g 'read -r x </etc/passwd' 2 "after restart: open of /etc/passwd still refused"
grep -q '"action":"denied"' /var/log/mcpguard/audit.jsonl || fail "no denied decision in /var/log/mcpguard/audit.jsonl"
step "audit log has the denials ($(grep -c '"action":"denied"' /var/log/mcpguard/audit.jsonl) lines)"

# --- upgrade path (the same .deb again): a changed conffile is kept, the daemon is restarted by
# postinst (not stopped by prerm), enforcement continues
echo '# changed by deb-test' >>/etc/mcpguard/mcpguard.toml
pid_before=$(systemctl show -p MainPID --value mcpguard.service)
apt-get install -y --reinstall -o Dpkg::Options::=--force-confold "$deb" >/var/tmp/apt.log 2>&1 \
	|| { cat /var/tmp/apt.log; fail "apt-get install --reinstall $deb failed"; }
grep -q '^# changed by deb-test$' /etc/mcpguard/mcpguard.toml || fail "the changed conffile /etc/mcpguard/mcpguard.toml was replaced on upgrade"
wait_status
pid_after=$(systemctl show -p MainPID --value mcpguard.service)
[ "$pid_after" != "$pid_before" ] || fail "postinst did not restart the daemon on upgrade (pid $pid_before)"
step "upgraded: conffile kept, daemon restarted (pid $pid_before -> $pid_after)"
g '/usr/bin/uname' 126 "after upgrade: exec /usr/bin/uname still refused"

# --- purge: nothing pinned, no unit, no settings, no state; enforcement is off for real
apt-get purge -y mcpguard >/var/tmp/apt.log 2>&1 || { cat /var/tmp/apt.log; fail "apt-get purge mcpguard failed"; }
[ ! -e /sys/fs/bpf/mcpguard ] || fail "/sys/fs/bpf/mcpguard left after purge: $(ls -R /sys/fs/bpf/mcpguard | head)"
[ ! -e /lib/systemd/system/mcpguard.service ] || fail "unit file left after purge"
systemctl cat mcpguard.service >/dev/null 2>&1 && fail "systemd still knows mcpguard.service after purge"
for d in /etc/mcpguard /var/lib/mcpguard /var/log/mcpguard /run/mcpguard /usr/bin/mcpguard; do
	[ ! -e "$d" ] || fail "$d left after purge"
done
step "purged: nothing pinned, no unit, no /etc/mcpguard, no state, no logs"
g '/usr/bin/uname >/dev/null' 0 "after purge: nothing enforces (uname runs in the former session)"

exec 3>&-
finish PASS
