#!/usr/bin/env bash
# `vmctl cluster create --no-start` of 3 control planes and 4 GPU workers (the HGX H200 fixture
# host, one whole GPU each) from a cached factory image, against the lab's real libvirtd, split
# the way the command reports it: key generation (the secrets bundle; its RSA-4096 key is most of
# it), configs (7 machine configs, seed files and the talosconfig), domain definitions (overlays,
# seed ISOs, define), and the rest (one ARP scan of the bridge, the reservation lock, the
# checks). Side by side: the same 7 nodes made the way it took before, one `create talos
# --no-start` each (the first makes the cluster, the others join it; each scans for its own
# address). Each run starts from the same state: the image cached, nothing else (the cluster is
# destroyed, and the single nodes deleted, between runs); the contenders alternate.
# Target: the cluster create takes less than the 7 single creates; its split is reported.
# Needs root and the lab (netns vmlab, libvirtd); brings it up when it is down and takes it down
# again after. The Image Factory is tests/lab/factory_stub.py inside the lab netns.
# Env: VMCTL_BIN, RUNS (default 3).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
# shellcheck source=tests/lab/lib.sh
. "$repo/tests/lab/lib.sh"
if [[ $(id -u) -ne 0 ]]; then
    echo "62-cluster-create: skipped: needs root (the lab: network namespace, libvirtd)"
    exit 0
fi
bench_vmctl
runs=${RUNS:-3}
tree_bin=${GVB_FIXTURE_TREE:-${CARGO_TARGET_DIR:-$repo/target}/release/examples/fixture-tree}
[[ -x $tree_bin ]] || cargo build --release -q -p gpu-vm-bootstrap --example fixture-tree --manifest-path "$repo/Cargo.toml"

lab_was_up=1
ip netns pids "$GVB_LAB_NETNS" >/dev/null 2>&1 && lab_virsh version >/dev/null 2>&1 || lab_was_up=0
((lab_was_up)) || "$repo/tests/lab/up.sh"
mkdir -p /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/bench-cluster.XXXXXX)
chmod 0755 "$work"
host=$work/host
"$tree_bin" hgx-h200x8-nvswitch-truncated "$host" dhcp >/dev/null
# One GPU per node of the NVSwitch host: Shared NVSwitch multitenancy (FABRIC_MODE=1, Fabric
# Manager running), as tests/fixtures/hosts/synthetic-hgx-shared-nvswitch.
mkdir -p "$host/usr/share/nvidia/nvswitch" "$host/proc/4242"
echo FABRIC_MODE=1 >"$host/usr/share/nvidia/nvswitch/fabricmanager.cfg"
echo nv-fabricmanage >"$host/proc/4242/comm"
mkdir -p "$host/sys/class/net/$GVB_LAB_BRIDGE/bridge"
chmod 0755 "$host"
qemu-img create -q -f qcow2 "$work/image.qcow2" 64M
port=$((20000 + $$ % 20000))
# `ip netns exec` execs python: $! is the server's own pid, which the cleanup stops.
ip netns exec "$GVB_LAB_NETNS" python3 "$repo/tests/lab/factory_stub.py" "$port" "$work/image.qcow2" "$work/ready" >/dev/null 2>&1 &
stub=$!
for _ in $(seq 600); do [[ -e $work/ready ]] && break; sleep 0.1; done
[[ -e $work/ready ]] || { echo "62-cluster-create: the factory stub did not start" >&2; exit 1; }
export VMCTL_TALOS_FACTORY_URL=http://127.0.0.1:$port VMCTL_GITHUB_API_URL=http://127.0.0.1:$port
export VMCTL_CONNECT=$GVB_LAB_URI VMCTL_STORAGE_DIR=/vms VMCTL_IMAGE_CACHE=/cache
export VMCTL_DOMAIN_TYPE=qemu VMCTL_CPU_MODE=host-model VMCTL_RESERVED_IP_RANGE=198.18.0.200-198.18.0.239
version=v1.12.1
vmctl() { lab_in_ns "$VMCTL_BIN" --host-root "$host" "$@"; }
nodes=(bench-cp-1 bench-cp-2 bench-cp-3 bench-gpu-1 bench-gpu-2 bench-gpu-3 bench-gpu-4)
gpus=(5d:00.0 3a:00.0 2a:00.0 18:00.0)
clean() {
    vmctl cluster destroy bench --yes >/dev/null 2>&1 || true
    local n
    for n in "${nodes[@]}"; do
        vmctl delete "$n" --yes --force >/dev/null 2>&1 || lab_virsh undefine --nvram "$n" >/dev/null 2>&1 || true
    done
    rm -rf "$host/var/lib/vmctl/talos/bench" "$host/var/lib/vmctl/ip-reservations.json"
}
cleanup() {
    clean
    kill "$stub" 2>/dev/null || true
    rm -rf "$work"
    ((lab_was_up)) || "$repo/tests/lab/down.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
size=(--cpus 1 --memory 512 --disk 1G)
cluster() {
    vmctl cluster create bench --control-planes 3 --gpu-workers 4 --no-start --version "$version" \
        --bridge "$GVB_LAB_BRIDGE" --gateway 198.18.0.1 --cp-cpus 1 --cp-memory 512 --cp-disk 1G \
        --worker-cpus 1 --worker-memory 512 --worker-disk 1G --json >"$work/cluster.json"
}
singles() {
    local i common=(--no-start --version "$version" --bridge "$GVB_LAB_BRIDGE" --gateway 198.18.0.1 --cluster bench "${size[@]}")
    vmctl create talos bench-cp-1 "${common[@]}" >/dev/null 2>>"$work/singles.log"
    for i in 2 3; do vmctl create talos "bench-cp-$i" "${common[@]}" >/dev/null 2>>"$work/singles.log"; done
    for i in 1 2 3 4; do
        vmctl create talos "bench-gpu-$i" --role worker --gpu "${gpus[$((i - 1))]}" "${common[@]}" >/dev/null 2>>"$work/singles.log"
    done
}
# Warm-up: both images (plain and NVIDIA schematic) into the cache; not timed.
clean
cluster
clean
singles
clean
sync
declare -a c_ms s_ms keys cfg dom
one() {
    local t0 t k c d
    t0=$(date +%s%N)
    "$1"
    t=$((($(date +%s%N) - t0) / 1000000))
    if [[ $1 == cluster ]]; then
        c_ms+=("$t")
        read -r k c d < <(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["timings"]; print(t["key_generation_ms"], t["configs_ms"], t["domains_ms"])' "$work/cluster.json")
        keys+=("$k") cfg+=("$c") dom+=("$d")
    else
        s_ms+=("$t")
    fi
    clean
    sync
}
for ((r = 0; r < runs; r++)); do
    if ((r % 2)); then one singles; one cluster; else one cluster; one singles; fi
done
med() { printf '%s\n' "$@" | bench_median; }
cm=$(med "${c_ms[@]}") sm=$(med "${s_ms[@]}") km=$(med "${keys[@]}") fm=$(med "${cfg[@]}") dm=$(med "${dom[@]}")
rest=$(awk -v t="$cm" -v k="$km" -v f="$fm" -v d="$dm" 'BEGIN { print t - k - f - d }')
ratio=$(awk -v a="$cm" -v b="$sm" 'BEGIN { printf "%.2f", a / b }')
printf '%-52s %10s\n' "median of $runs, ms" "wall"
printf '%-52s %10s\n' "cluster create --no-start (3 cp + 4 GPU workers)" "$cm"
printf '%-52s %10s\n' "  key generation" "$km"
printf '%-52s %10s\n' "  configs (7 machine configs, seeds, talosconfig)" "$fm"
printf '%-52s %10s\n' "  domain definitions (overlays, seed ISOs, define)" "$dm"
printf '%-52s %10s\n' "  the rest (process start, ARP scan, checks, lock)" "$rest"
printf '%-52s %10s\n' "7 x create talos --no-start" "$sm"
bench_result "cluster create --no-start, 3 cp + 4 GPU workers" "$cm ms" \
    "7 x create talos: $sm ms; keys $km / configs $fm / domains $dm / rest $rest ms" \
    "< the 7 single creates" "$(bench_check "$cm < $sm")" "${ratio}x"
[[ $(bench_check "$cm < $sm") == pass ]]
