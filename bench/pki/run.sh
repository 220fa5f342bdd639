#!/usr/bin/env bash
# PKI benchmark: `ocfk8s pki generate` (release build) against the same PKI
# made by cfssl (kubetool's engine, bench/pki/cfssl.sh), for 3 masters and
# 200 workers, with ECDSA P-256 and RSA-2048, plus the signing floor (key
# generation and one signature per certificate, nothing else) on one core
# and on every core. Prints a Markdown table.
#
# Every measured command runs BENCH_REPETITIONS times (default 5 for
# ECDSA, 1 for RSA, whose runs take tens of seconds), interleaved
# (ocfk8s, cfssl, floors, ocfk8s, ...), each into a folder of its own;
# the table shows medians.
#
# Where the files go: run as root, on a fresh ext4 filesystem (with its
# journal, as on an admin's machine: a 4 GiB image file in target/,
# loop-mounted for the run), so that nothing the machine did before
# counts. Otherwise in the checkout, after waiting BENCH_SETTLE seconds
# (default 65): on an ext4 *without* a journal (this project's CI
# machines) the kernel skips inodes freed in the last minutes when it
# creates files, and after a large deletion nearby (a build, an earlier
# run's cleanup) creating the store's files takes several times longer,
# for every tool alike. Nothing is deleted until the end.
#
# Usage: bench/pki/run.sh [MASTERS] [WORKERS]
#   BENCH_REPETITIONS=N  BENCH_ALGORITHMS="ecdsa-p256 rsa-2048"  BENCH_FRESH_FS=0
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

mkdir -p target
if [ "$(id -u)" -eq 0 ] && [ "${BENCH_FRESH_FS:-1}" = 1 ] && command -v mkfs.ext4 > /dev/null; then
  image=$(mktemp --suffix=.img "$PWD/target/bench-pki.XXXXXX")
  mount_point=$(mktemp -d)
  trap 'umount "$mount_point" 2> /dev/null; rmdir "$mount_point"; rm -f "$image"' EXIT
  truncate -s 4G "$image"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$image"
  mount -o loop "$image" "$mount_point"
  work=$mount_point/work
  mkdir "$work"
  where="a fresh ext4 filesystem with a journal (4 GiB image, loop-mounted)"
else
  work=$(mktemp -d "$PWD/target/bench-pki.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  where="$(findmnt -n -o FSTYPE --target "$work") in the checkout, after ${BENCH_SETTLE:-65} s for earlier deletions to age out"
  sync
  sleep "${BENCH_SETTLE:-65}"
fi

# Run a command (output discarded), setting wall_ms (from the shell's
# microsecond clock) and cpu_ms (user + system time of it and its
# children). On a shared machine CPU time is the steadier figure; wall
# time is what a user waits.
measure() {
  local times start end
  times=$(mktemp)
  start=$EPOCHREALTIME
  /usr/bin/time -f '%U %S' -o "$times" "$@" > /dev/null
  end=$EPOCHREALTIME
  read -r user system < "$times"
  rm -f "$times"
  wall_ms=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%d", (e - s) * 1000 }')
  cpu_ms=$(awk -v u="$user" -v s="$system" 'BEGIN { printf "%d", (u + s) * 1000 }')
}

# median NUMBERS...: the median (the lower middle one of an even count).
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

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
echo "Files written on $where."
echo
echo "Wall time, CPU time (user + system) in parentheses."
echo
echo "| keys | certificates | ocfk8s pki generate | cfssl (kubetool's engine, $cores parallel) | speed-up | signing floor, 1 core | signing floor, $cores cores | writing floor | ocfk8s / signing floor |"
echo "|---|---|---|---|---|---|---|---|---|"
for algorithm in ${BENCH_ALGORITHMS:-ecdsa-p256 rsa-2048}; do
  if [ "$algorithm" = ecdsa-p256 ]; then repetitions=${BENCH_REPETITIONS:-5}; else repetitions=${BENCH_REPETITIONS:-1}; fi
  # `pki generate` flushes its batch with one syncfs while little else is
  # waiting to be written on the machine, else with an fsync per file.
  dirty_mib=$(awk '/^(Dirty|Writeback):/ { kb += $2 } END { printf "%d", kb / 1024 }' /proc/meminfo)
  for name in ocfk8s_wall ocfk8s_cpu second_wall second_cpu cfssl_wall cfssl_cpu one_wall one_cpu all_wall all_cpu write_wall write_cpu; do
    eval "$name=()"
  done
  for repetition in $(seq 1 "$repetitions"); do
    run=$work/$algorithm-$repetition
    mkdir -p "$run"
    inventory "$algorithm" > "$run/inventory.toml"
    measure "$ocfk8s" -q -i "$run/inventory.toml" pki generate
    ocfk8s_wall+=("$wall_ms") ocfk8s_cpu+=("$cpu_ms")
    if [ "$repetition" -eq 1 ]; then
      # The floors make as many keys and files as the store holds.
      store=$run/pki-$algorithm
      keys_wanted=$(($(find "$store" -name '*.crt' | wc -l) + 3))
      files_wanted=$(find "$store" -type f | wc -l)
    fi
    measure "$ocfk8s" -q -i "$run/inventory.toml" pki generate
    second_wall+=("$wall_ms") second_cpu+=("$cpu_ms")
    measure bench/pki/cfssl.sh "$algorithm" "$run/cfssl" "$masters" "$workers"
    cfssl_wall+=("$wall_ms") cfssl_cpu+=("$cpu_ms")
    measure "$floor" "$keys_wanted" "$algorithm" 1
    one_wall+=("$wall_ms") one_cpu+=("$cpu_ms")
    measure "$floor" "$keys_wanted" "$algorithm" 0
    all_wall+=("$wall_ms") all_cpu+=("$cpu_ms")
    measure "$floor" write "$run/write" "$files_wanted"
    write_wall+=("$wall_ms") write_cpu+=("$cpu_ms")
  done
  store=$run/pki-$algorithm
  # Every certificate of the store: files, plus admin and super-admin,
  # which live only in their kubeconfigs; and the service-account key.
  certificates=$(($(find "$store" -name '*.crt' | wc -l) + 2))
  files=$(find "$store" -type f | wc -l)
  cfssl_certificates=$(find "$run/cfssl" -name '*.pem' ! -name '*-key.pem' | wc -l)
  if [ "$cfssl_certificates" -ne "$certificates" ]; then
    echo "cfssl made $cfssl_certificates certificates, ocfk8s $certificates" >&2
    exit 1
  fi
  if [ "$((certificates + 1))" -ne "$keys_wanted" ] || [ "$files" -ne "$files_wanted" ]; then
    echo "the floors measured $keys_wanted keys and $files_wanted files; the store has $((certificates + 1)) keys and $files files" >&2
    exit 1
  fi
  for name in ocfk8s_wall ocfk8s_cpu second_wall second_cpu cfssl_wall cfssl_cpu one_wall one_cpu all_wall all_cpu write_wall write_cpu; do
    eval "$name=\$(median \"\${$name[@]}\")"
  done

  echo "| $algorithm | $certificates ($files files) | $(seconds "$ocfk8s_wall") s ($(seconds "$ocfk8s_cpu")) | $(seconds "$cfssl_wall") s ($(seconds "$cfssl_cpu")) | $(ratio "$cfssl_wall" "$ocfk8s_wall")x ($(ratio "$cfssl_cpu" "$ocfk8s_cpu")x) | $(seconds "$one_wall") s ($(seconds "$one_cpu")) | $(seconds "$all_wall") s ($(seconds "$all_cpu")) | $(seconds "$write_wall") s ($(seconds "$write_cpu")) | $(ratio "$ocfk8s_wall" "$((all_wall > 0 ? all_wall : 1))")x ($(ratio "$ocfk8s_cpu" "$((all_cpu > 0 ? all_cpu : 1))")x) |"
  echo "$algorithm: medians of $repetitions; ${dirty_mib} MiB dirty before the first run; second run (nothing to do): $(seconds "$second_wall") s ($(seconds "$second_cpu")); load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
