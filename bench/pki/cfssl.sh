#!/usr/bin/env bash
# The same PKI as `ocfk8s pki generate`, made the way kubetool makes it:
# cfssl. Three CAs (kubernetes, etcd-ca, front-proxy-ca), the
# service-account pair, and per node the same leaves (kubelet client,
# kubelet serving and kube-proxy everywhere; etcd server/peer/healthcheck-client, apiserver,
# apiserver-kubelet-client, front-proxy-client, controller-manager and
# scheduler on masters), plus apiserver-etcd-client, admin and super-admin,
# with kubeconfigs for the same identities. cfssl gets every core
# (`xargs -P`), its best case; kubetool itself runs it serially. The files
# are synced at the end, as ocfk8s does.
#
# Usage: cfssl.sh ecdsa-p256|rsa-2048 OUT_DIR MASTERS WORKERS
set -euo pipefail
shopt -s inherit_errexit

algorithm=$1 out=$2 masters=$3 workers=$4
case "$algorithm" in
  ecdsa-p256) key='{"algo":"ecdsa","size":256}' ;;
  rsa-2048) key='{"algo":"rsa","size":2048}' ;;
  *) echo "cfssl.sh: unknown algorithm $algorithm" >&2; exit 2 ;;
esac
mkdir -p "$out"
cd "$out"

cat > ca-config.json <<JSON
{"signing":{"default":{"expiry":"8760h"},"profiles":{
  "client":{"expiry":"8760h","usages":["digital signature","key encipherment","client auth"]},
  "server":{"expiry":"8760h","usages":["digital signature","key encipherment","server auth"]},
  "peer":{"expiry":"8760h","usages":["digital signature","key encipherment","server auth","client auth"]}}}}
JSON

for ca in kubernetes:ca etcd-ca:etcd-ca front-proxy-ca:front-proxy-ca; do
  printf '{"CN":"%s","key":%s,"ca":{"expiry":"87600h"}}' "${ca%%:*}" "$key" > "${ca#*:}-csr.json"
done
printf '%s\n' ca etcd-ca front-proxy-ca |
  xargs -P "$(nproc)" -I{} sh -c 'cfssl gencert -initca {}-csr.json 2>/dev/null | cfssljson -bare {}'

case "$algorithm" in
  ecdsa-p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key 2>/dev/null ;;
  rsa-2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null ;;
esac
openssl pkey -in sa.key -pubout -out sa.pub

# One job per leaf: name, CA, profile, CN, O, hosts, kubeconfig server.
jobs=jobs.txt
: > "$jobs"
job() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$jobs"; }
endpoint=https://10.0.0.1:6443
job apiserver-etcd-client etcd-ca client kube-apiserver-etcd-client - - -
job admin ca client kubernetes-admin kubeadm:cluster-admins - "$endpoint"
job super-admin ca client kubernetes-super-admin system:masters - "$endpoint"
for i in $(seq 1 "$masters"); do
  name=m$i address=10.0.1.$i
  local_endpoint=https://$address:6443
  etcd_hosts="$name,localhost,$address,127.0.0.1,::1"
  job "$name-kubelet" ca client "system:node:$name" system:nodes - "$endpoint"
  job "$name-kube-proxy" ca client system:kube-proxy - - "$endpoint"
  job "$name-kubelet-server" ca server "system:node:$name" system:nodes "$name,$address" -
  job "$name-etcd-server" etcd-ca peer "$name" - "$etcd_hosts" -
  job "$name-etcd-peer" etcd-ca peer "$name" - "$etcd_hosts" -
  job "$name-etcd-healthcheck-client" etcd-ca client kube-etcd-healthcheck-client - - -
  job "$name-apiserver" ca server kube-apiserver - \
    "kubernetes,kubernetes.default,kubernetes.default.svc,kubernetes.default.svc.cluster.local,$name,10.96.0.1,$address,10.0.0.1" -
  job "$name-apiserver-kubelet-client" ca client kube-apiserver-kubelet-client kubeadm:cluster-admins - -
  job "$name-front-proxy-client" front-proxy-ca client front-proxy-client - - -
  job "$name-controller-manager" ca client system:kube-controller-manager - - "$local_endpoint"
  job "$name-scheduler" ca client system:kube-scheduler - - "$local_endpoint"
done
for i in $(seq 1 "$workers"); do
  name=w$i address=10.0.$((2 + i / 250)).$((i % 250 + 1))
  job "$name-kubelet" ca client "system:node:$name" system:nodes - "$endpoint"
  job "$name-kube-proxy" ca client system:kube-proxy - - "$endpoint"
  job "$name-kubelet-server" ca server "system:node:$name" system:nodes "$name,$address" -
done

leaf() {
  local name=$1 ca=$2 profile=$3 cn=$4 org=$5 hosts=$6 server=$7
  local names='[]' hostlist='[]'
  [ "$org" != - ] && names="[{\"O\":\"$org\"}]"
  [ "$hosts" != - ] && hostlist="[\"${hosts//,/\",\"}\"]"
  printf '{"CN":"%s","names":%s,"hosts":%s,"key":%s}' "$cn" "$names" "$hostlist" "$key" > "$name-csr.json"
  cfssl gencert -ca="$ca.pem" -ca-key="$ca-key.pem" -config=ca-config.json \
    -profile="$profile" "$name-csr.json" 2>/dev/null | cfssljson -bare "$name"
  # The request files stay: deleting 1,300 files here would slow the file
  # creation of whatever the benchmark runs next (see run.sh).
  if [ "$server" != - ]; then
    cat > "$name.conf" <<YAML
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 "$ca.pem")
    server: $server
  name: bench
contexts:
- context:
    cluster: bench
    user: $cn
  name: $cn@bench
current-context: $cn@bench
kind: Config
preferences: {}
users:
- name: $cn
  user:
    client-certificate-data: $(base64 -w0 "$name.pem")
    client-key-data: $(base64 -w0 "$name-key.pem")
YAML
    chmod 600 "$name.conf"
  fi
}
export -f leaf
export key
tr '\t' '\n' < "$jobs" | xargs -d '\n' -n 7 -P "$(nproc)" bash -c 'leaf "$@"' _
sync -f .
