#!/usr/bin/env bash
# The .deb under a real systemd (scripts/check-deploy --systemd; docs/deployment.md): a minimal Debian bookworm
# (debootstrap, kept in $TOOLS/nspawn-bookworm) booted by systemd-nspawn as an ephemeral copy, sharing the host's
# network (loopback only is used). In it: the package is installed with dpkg; the ferry user exists;
# ferry.service is neither enabled nor started, ferry-connector.path is; `systemctl enable --now ferry` serves
# /readyz under the unit's hardening; a tenant is made as the ferry user; writing /etc/ferry/connector.toml
# (root, 0600) is all it takes for the connector to start (the .path unit, LoadCredential, DynamicUser) and
# relay a request to a target; `systemctl reload ferry` reloads; both stop cleanly (Result=success, status 0);
# an upgrade restarts the connector; a purge stops and disables everything.
#
# usage: deploy-systemd-nspawn.sh DEB TOOLS_DIR      (as root; prints ok:/FAILED: lines, exits 1 on a failure,
#                                                     77 when it cannot run here)
set -uo pipefail
DEB="$1"
TOOLS="$2"
ROOTFS="$TOOLS/nspawn-bookworm"
failed=0
ok() { echo "ok: $*"; }
bad() { echo "FAILED: $*"; failed=1; }

[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
for t in systemd-nspawn:systemd-container debootstrap:debootstrap; do
    command -v "${t%%:*}" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${t##*:}" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${t##*:}" >/dev/null 2>&1; } ||
        { echo "skipped: ${t%%:*} could not be installed"; exit 77; }
done
if [ ! -f "$ROOTFS/.done" ]; then
    echo "debootstrap: a minimal bookworm with systemd into $ROOTFS (once; about 1.5 minutes)"
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,curl,python3 \
        bookworm "$ROOTFS" http://deb.debian.org/debian >"$TOOLS/debootstrap.log" 2>&1 ||
        { tail -5 "$TOOLS/debootstrap.log"; echo "skipped: debootstrap failed"; exit 77; }
    touch "$ROOTFS/.done"
fi

WORK="$(mktemp -d)"
cp "$DEB" "$WORK/ferry.deb"
MACHINE="ferry-check-$$"
systemd-nspawn -D "$ROOTFS" --ephemeral --register=no --keep-unit -b --console=pipe -M "$MACHINE" \
    --bind-ro="$WORK:/mnt/check" >"$WORK/nspawn.log" 2>&1 &
NSPAWN=$!
LEADER=""
cleanup() {
    [ -n "$LEADER" ] && nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 50); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
    kill "$NSPAWN" 2>/dev/null
    wait "$NSPAWN" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
for _ in $(seq 100); do
    LEADER="$(pgrep -P "$NSPAWN" | head -1)"
    [ -n "$LEADER" ] && break
    sleep 0.1
done
[ -n "$LEADER" ] || { cat "$WORK/nspawn.log"; echo "skipped: systemd-nspawn did not boot"; exit 77; }
IN=(nsenter -t "$LEADER" -a)
state=""
for _ in $(seq 100); do
    state="$("${IN[@]}" systemctl is-system-running 2>/dev/null)"
    case "$state" in running | degraded) break ;; esac
    sleep 0.2
done
case "$state" in running | degraded) ok "systemd booted in the container ($state)" ;;
    *) cat "$WORK/nspawn.log"; echo "skipped: systemd in the container is '$state'"; exit 77 ;; esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port) A=$(free_port) T=$(free_port)

"${IN[@]}" dpkg -i /mnt/check/ferry.deb >"$WORK/dpkg.log" 2>&1 && ok "dpkg -i: installed" ||
    { bad "dpkg -i"; cat "$WORK/dpkg.log"; exit 1; }
"${IN[@]}" getent passwd ferry >/dev/null && ok "the ferry user exists" || bad "no ferry user"
st="$("${IN[@]}" systemctl is-enabled ferry.service ferry-connector.path | tr '\n' ' ')"
act="$("${IN[@]}" systemctl is-active ferry.service ferry-connector.service ferry-connector.path | tr '\n' ' ')"
[ "$st" = "disabled enabled " ] && [ "$act" = "inactive inactive active " ] &&
    ok "after install: ferry.service disabled and stopped; ferry-connector.path enabled and active; the connector waits for its file" ||
    bad "after install: enabled '$st', active '$act'"

"${IN[@]}" sed -i -e "s|127.0.0.1:8080|127.0.0.1:$P|" -e "s|127.0.0.1:8081|127.0.0.1:$A|" /etc/ferry/ferry.toml
"${IN[@]}" systemctl enable --now ferry >/dev/null 2>&1
up=""
for _ in $(seq 50); do up="$("${IN[@]}" curl -fsS "http://127.0.0.1:$P/readyz" 2>/dev/null)" && break; sleep 0.2; done
[ "$up" = ready ] && ok "systemctl enable --now ferry: /readyz answers under the unit's hardening" ||
    { bad "ferry.service not ready"; "${IN[@]}" journalctl -u ferry --no-pager | tail -20; }
SECRET="$("${IN[@]}" runuser -u ferry -- ferry tenant create demo --data-dir /var/lib/ferry 2>/dev/null)"
[ -n "$SECRET" ] && ok "a tenant made as the ferry user in /var/lib/ferry" || bad "tenant create as ferry"

"${IN[@]}" sh -c 'mkdir -p /srv/www && echo hello-from-target >/srv/www/index.txt'
"${IN[@]}" systemd-run --quiet --unit=check-target python3 -m http.server "$T" --bind 127.0.0.1 --directory /srv/www
"${IN[@]}" sh -c "umask 077; cat >/etc/ferry/connector.toml" <<EOF
version = 1

[connector]
server = "http://127.0.0.1:$P"
tenant = "demo"
secret = "$SECRET"

[[connector.targets]]
name = "app"
url = "http://127.0.0.1:$T"
EOF
body=""
for _ in $(seq 75); do
    body="$("${IN[@]}" curl -fsS "http://127.0.0.1:$P/relay/demo/app/index.txt" 2>/dev/null)" && break
    sleep 0.2
done
[ "$body" = hello-from-target ] &&
    ok "writing /etc/ferry/connector.toml (root, 0600) started the connector (path unit, LoadCredential, DynamicUser); a request relayed" ||
    { bad "no relayed request after writing connector.toml"; "${IN[@]}" journalctl -u ferry-connector --no-pager | tail -20; }

"${IN[@]}" systemctl reload ferry && sleep 0.5 &&
    "${IN[@]}" journalctl -u ferry --no-pager | grep -q 'SIGHUP: reloading the gateway section' &&
    ok "systemctl reload ferry: SIGHUP reloads the gateway section" || bad "systemctl reload ferry"

"${IN[@]}" dpkg -i /mnt/check/ferry.deb >"$WORK/dpkg.log" 2>&1 || bad "dpkg -i again (upgrade)"
body=""
for _ in $(seq 75); do
    body="$("${IN[@]}" curl -fsS "http://127.0.0.1:$P/relay/demo/app/index.txt" 2>/dev/null)" && break
    sleep 0.2
done
[ "$body" = hello-from-target ] && ok "after an upgrade in place: services restarted, a request relayed" ||
    bad "after the upgrade: no relayed request"

"${IN[@]}" systemctl stop ferry-connector.path ferry-connector ferry
res="$("${IN[@]}" systemctl show -p Result -p ExecMainStatus --value ferry ferry-connector | tr -s '\n' ' ')"
[ "$res" = "success 0 success 0 " ] && ok "systemctl stop: both exit 0 after draining (Result=success)" ||
    { bad "stop: $res"; "${IN[@]}" journalctl -u ferry -u ferry-connector --no-pager | tail -20; }
"${IN[@]}" dpkg --purge ferry >"$WORK/dpkg.log" 2>&1 || bad "dpkg --purge"
left="$("${IN[@]}" sh -c 'ls /etc/systemd/system/*.wants/ | grep -c ferry')"
[ "$left" = 0 ] && ok "dpkg --purge: the units are gone and disabled" || bad "dpkg --purge left $left unit links"
exit $failed
