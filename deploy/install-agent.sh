#!/usr/bin/env bash
# Installs kvbench-agent as a systemd service: its user, binary, config, certificates and
# token, the unit, and the polkit rule that lets it restart the engine's unit (and nothing
# else). Idempotent: running it again with the same files gives the same tree.
#
#   deploy/install-agent.sh --binary target/release/kvbench-agent --config agent.yaml \
#       [--tls-dir DIR --agent-name NAME] [--token-file FILE] [--engine-unit vllm.service] \
#       [--user kvbench-agent] [--root DIR] [--no-start]
#   deploy/install-agent.sh --uninstall [--root DIR]
#
# --tls-dir holds what `kvbench certs init` wrote: NAME.pem, NAME.key and ca.pem; they go
# to /etc/kvbench-agent/tls/{agent.pem,agent.key,ca.pem}, where the config's tls: section
# should point. --token-file goes to /etc/kvbench-agent/token (token_file). --root DIR
# installs under DIR (packaging, tests): no user is created, nothing is started, and the
# user is declared for systemd-sysusers instead.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
binary="" config="" tls_dir="" agent_name="" token_file="" root="" uninstall=0 start=1
engine_unit="vllm.service" user="kvbench-agent"

die() { echo "install-agent.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --config) config="${2:?--config needs a path}"; shift 2 ;;
    --tls-dir) tls_dir="${2:?--tls-dir needs a folder}"; shift 2 ;;
    --agent-name) agent_name="${2:?--agent-name needs a name}"; shift 2 ;;
    --token-file) token_file="${2:?--token-file needs a path}"; shift 2 ;;
    --engine-unit) engine_unit="${2:?--engine-unit needs a unit name}"; shift 2 ;;
    --user) user="${2:?--user needs a name}"; shift 2 ;;
    --root) root="${2:?--root needs a folder}"; shift 2 ;;
    --no-start) start=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$engine_unit" in
  *[!A-Za-z0-9@._:-]*|"") die "--engine-unit $engine_unit: not a unit name" ;;
esac
case "$user" in
  *[!a-z0-9_-]*|"") die "--user $user: lowercase letters, digits, '-' and '_' only" ;;
esac

if [ -n "$root" ]; then
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
fi
etc="$root/etc/kvbench-agent"
bin="$root/usr/local/bin/kvbench-agent"
unit="$root/etc/systemd/system/kvbench-agent.service"
rule="$root/etc/polkit-1/rules.d/50-kvbench-agent.rules"
sysusers="$root/etc/sysusers.d/kvbench-agent.conf"
files=("$bin" "$etc/agent.yaml" "$etc/tls/agent.pem" "$etc/tls/agent.key" "$etc/tls/ca.pem" "$etc/token" "$unit" "$rule" "$sysusers")
dirs=("$etc/tls" "$etc" "$root/etc/systemd/system" "$root/etc/systemd" "$root/etc/polkit-1/rules.d" "$root/etc/polkit-1" "$root/etc/sysusers.d" "$root/usr/local/bin" "$root/usr/local" "$root/usr" "$root/etc")

if [ "$uninstall" = 1 ]; then
  if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now kvbench-agent.service 2>/dev/null || true
  fi
  for f in "${files[@]}"; do rm -f "$f"; done
  if [ -z "$root" ]; then
    systemctl daemon-reload 2>/dev/null || true
    if id "$user" >/dev/null 2>&1; then userdel "$user" || true; fi
  else
    # Only the folders this script made, and only when nothing else is in them.
    for d in "${dirs[@]}"; do rmdir "$d" 2>/dev/null || true; done
  fi
  echo "kvbench-agent uninstalled${root:+ from $root}"
  exit 0
fi

[ -n "$binary" ] || die "--binary is required (target/release/kvbench-agent)"
[ -x "$binary" ] || die "--binary $binary: not an executable file"
[ -n "$config" ] || die "--config is required (an agent config, as in deploy/agent/)"
[ -f "$config" ] || die "--config $config: no such file"
if [ -n "$tls_dir" ]; then
  [ -n "$agent_name" ] || die "--tls-dir needs --agent-name (its files are NAME.pem and NAME.key)"
  for f in "$agent_name.pem" "$agent_name.key" ca.pem; do
    [ -f "$tls_dir/$f" ] || die "--tls-dir $tls_dir: no $f (kvbench certs init writes it)"
  done
fi
[ -z "$token_file" ] || [ -f "$token_file" ] || die "--token-file $token_file: no such file"

group_of_secrets=root
if [ -z "$root" ]; then
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
  fi
  group_of_secrets="$user"
fi

# install FILE DEST MODE: copies, and sets the mode (and, on a live system, the group that
# may read secrets) every time, so that a second run changes nothing.
put() {
  local src="$1" dest="$2" mode="$3" group="${4:-root}"
  mkdir -p "$(dirname "$dest")"
  cp -f "$src" "$dest"
  chmod "$mode" "$dest"
  if [ -z "$root" ]; then chown "root:$group" "$dest"; fi
}

put "$binary" "$bin" 0755
put "$config" "$etc/agent.yaml" 0640 "$group_of_secrets"
if [ -n "$tls_dir" ]; then
  put "$tls_dir/$agent_name.pem" "$etc/tls/agent.pem" 0644
  put "$tls_dir/$agent_name.key" "$etc/tls/agent.key" 0640 "$group_of_secrets"
  put "$tls_dir/ca.pem" "$etc/tls/ca.pem" 0644
fi
if [ -n "$token_file" ]; then
  put "$token_file" "$etc/token" 0640 "$group_of_secrets"
fi
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
sed -e "s/^User=kvbench-agent$/User=$user/" -e "s/^Group=kvbench-agent$/Group=$user/" \
  "$here/systemd/kvbench-agent.service" > "$tmp"
put "$tmp" "$unit" 0644
sed -e "s/var agentUser = \"kvbench-agent\";/var agentUser = \"$user\";/" \
  -e "s/var engineUnit = \"vllm.service\";/var engineUnit = \"$engine_unit\";/" \
  "$here/polkit/50-kvbench-agent.rules" > "$tmp"
put "$tmp" "$rule" 0644
printf 'u %s - "kvbench agent" /nonexistent /usr/sbin/nologin\n' "$user" > "$tmp"
put "$tmp" "$sysusers" 0644

if [ -z "$root" ]; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then
    systemctl enable --now kvbench-agent.service
  fi
fi
echo "kvbench-agent installed${root:+ under $root}: config $etc/agent.yaml, unit $unit, polkit rule for $engine_unit"
