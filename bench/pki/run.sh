#!/usr/bin/env bash
# PKI benchmark: `ocfk8s pki generate` (release build) against the same PKI
# made by cfssl (kubetool's engine, bench/pki/cfssl.sh), for 3 masters and
# 200 workers, with ECDSA P-256 and RSA-2048, plus the signing floor (key
# generation and one signature per certificate, nothing else) on one core
# and on every core. Prints a Markdown table.
#
# Usage: bench/pki/run.sh [MASTERS] [WORKERS]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

for tool in cfssl cfssljson openssl /usr/bin/time; do
  command -v "$tool" > /dev/null || { echo "bench/pki/run.sh: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done

masters=${1:-3}
workers=${2:-200}
cargo build --release --quiet --bin ocfk8s --example pki_floor
ocfk8s=$PWD/target/release/ocfk8s
floor=$PWD/target/release/examples/pki_floor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Run a command (output discarded), setting wall_ms and cpu_ms (user +
# system time of it and its children). On a shared machine CPU time is the
# steadier figure; wall time is what a user waits.
measure() {
  local times
  times=$(mktemp)
  /usr/bin/time -f '%e %U %S' -o "$times" "$@" > /dev/null
  read -r wall user system < "$times"
  rm -f "$times"
  wall_ms=$(awk -v s="$wall" 'BEGIN { printf "%d", s * 1000 }')
  cpu_ms=$(awk -v u="$user" -v s="$system" 'BEGIN { printf "%d", (u + s) * 1000 }')
}

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

inventory() {
  local algorithm=$1
  cat <<TOML
[cluster]
name = "bench"
kubernetes_version = "1.31.4"
control_plane_endpoint = "10.0.0.1:6443"
pod_cidr = "10.240.0.0/12"
service_cidr = "10.96.0.0/12"
cluster_domain = "cluster.local"
cni = "flannel"
key_algorithm = "$algorithm"
cert_validity_days = 365
ca_validity_days = 3650
pki_dir = "pki-$algorithm"

[ssh]
user = "root"
port = 22
concurrency = 32

[install]
method = "none"
bin_dir = "/usr/bin"
TOML
  for i in $(seq 1 "$masters"); do
    printf '\n[[master]]\nname = "m%d"\naddress = "10.0.1.%d"\n' "$i" "$i"
  done
  for i in $(seq 1 "$workers"); do
    printf '\n[[worker]]\nname = "w%d"\naddress = "10.0.%d.%d"\n' "$i" $((2 + i / 250)) $((i % 250 + 1))
  done
}

cores=$(nproc)
echo "PKI for $masters masters + $workers workers on $cores cores ($(uname -m)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Wall time, CPU time (user + system) in parentheses."
echo
echo "| keys | certificates | ocfk8s pki generate | cfssl (kubetool's engine, $cores parallel) | speed-up | signing floor, 1 core | signing floor, $cores cores | writing floor | ocfk8s / signing floor |"
echo "|---|---|---|---|---|---|---|---|---|"
for algorithm in ecdsa-p256 rsa-2048; do
  inventory "$algorithm" > "$work/$algorithm.toml"
  # `pki generate` flushes its batch with one syncfs while little else is
  # waiting to be written on the machine, else with an fsync per file.
  dirty_mib=$(awk '/^(Dirty|Writeback):/ { kb += $2 } END { printf "%d", kb / 1024 }' /proc/meminfo)
  measure "$ocfk8s" -q -i "$work/$algorithm.toml" pki generate
  ocfk8s_wall=$wall_ms ocfk8s_cpu=$cpu_ms
  store=$work/pki-$algorithm
  # Every certificate of the store: files, plus admin and super-admin,
  # which live only in their kubeconfigs; and the service-account key.
  certificates=$(($(find "$store" -name '*.crt' | wc -l) + 2))
  keys=$((certificates + 1))
  files=$(find "$store" -type f | wc -l)
  measure "$ocfk8s" -q -i "$work/$algorithm.toml" pki generate
  second_wall=$wall_ms second_cpu=$cpu_ms

  measure bench/pki/cfssl.sh "$algorithm" "$work/cfssl-$algorithm" "$masters" "$workers"
  cfssl_wall=$wall_ms cfssl_cpu=$cpu_ms
  cfssl_certificates=$(find "$work/cfssl-$algorithm" -name '*.pem' ! -name '*-key.pem' | wc -l)
  if [ "$cfssl_certificates" -ne "$certificates" ]; then
    echo "cfssl made $cfssl_certificates certificates, ocfk8s $certificates" >&2
    exit 1
  fi

  measure "$floor" "$keys" "$algorithm" 1
  one_wall=$wall_ms one_cpu=$cpu_ms
  measure "$floor" "$keys" "$algorithm" 0
  all_wall=$wall_ms all_cpu=$cpu_ms
  measure "$floor" write "$work/write-$algorithm" "$files"
  write_wall=$wall_ms write_cpu=$cpu_ms

  echo "| $algorithm | $certificates ($files files) | $(seconds "$ocfk8s_wall") s ($(seconds "$ocfk8s_cpu")) | $(seconds "$cfssl_wall") s ($(seconds "$cfssl_cpu")) | $(ratio "$cfssl_wall" "$ocfk8s_wall")x ($(ratio "$cfssl_cpu" "$ocfk8s_cpu")x) | $(seconds "$one_wall") s ($(seconds "$one_cpu")) | $(seconds "$all_wall") s ($(seconds "$all_cpu")) | $(seconds "$write_wall") s ($(seconds "$write_cpu")) | $(ratio "$ocfk8s_wall" "$((all_wall > 0 ? all_wall : 1))")x ($(ratio "$ocfk8s_cpu" "$((all_cpu > 0 ? all_cpu : 1))")x) |"
  echo "$algorithm: ${dirty_mib} MiB dirty before the first run; second run (nothing to do): $(seconds "$second_wall") s ($(seconds "$second_cpu")); load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
