# shellcheck shell=bash
# Shared by the benchmarks in this directory (sourced, not run: it is not executable, so
# scripts/run-all.sh skips it).
#
# bench_result NAME MEASURED REFERENCE TARGET PASS [RATIO]
#   Records one row of the summary table that `make bench` prints at the end (scripts/bench.sh):
#   what was measured, what it was compared with (another tool's figure, or "-"), the ratio of
#   the two (or "-"), the target, and pass/fail. PASS is "pass" or "FAIL". Without
#   GVB_BENCH_SUMMARY (a script run on its own) the row is only printed.
bench_result() {
    local name=$1 measured=$2 reference=$3 target=$4 pass=$5 ratio=${6:--}
    printf 'summary: %s | %s | %s | %s | %s | %s\n' "$name" "$measured" "$reference" "$ratio" "$target" "$pass"
    if [[ -n ${GVB_BENCH_SUMMARY:-} ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$measured" "$reference" "$ratio" "$target" "$pass" >>"$GVB_BENCH_SUMMARY"
    fi
}

# bench_check EXPR: "pass" when the awk expression EXPR is true, else "FAIL".
bench_check() { awk "BEGIN { exit !($1) }" && echo pass || echo FAIL; }

# median / spread of numbers on stdin (one per line).
bench_median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
bench_spread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print hi - lo }'; }

# bench_vmctl: sets VMCTL_BIN to the release vmctl (built now) unless the caller gave one.
bench_vmctl() {
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    if [[ -z ${VMCTL_BIN:-} ]]; then
        cargo build --release -q -p vmctl-cli --manifest-path "$repo/Cargo.toml"
        VMCTL_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/vmctl
    fi
}

# bench_node_file FILE N PREFIX MAC3 BRIDGE: a libvirt test-driver node (test:///FILE) with N
# domains PREFIX0000…, each with a disk and a NIC on BRIDGE (MAC 52:54:00:MAC3:xx:xx). The test
# driver starts them running.
bench_node_file() {
    local file=$1 n=$2 prefix=$3 mac3=$4 bridge=$5 i
    {
        echo "<node>"
        for ((i = 0; i < n; i++)); do
            printf "<domain type='test'><name>%s%04d</name><memory>1048576</memory><vcpu>2</vcpu>" "$prefix" "$i"
            printf "<os><type arch='x86_64'>hvm</type></os><devices>"
            printf "<disk type='file' device='disk'><source file='/var/lib/vmctl/vms/%s%04d/disk.qcow2'/><target dev='vda' bus='virtio'/></disk>" "$prefix" "$i"
            printf "<interface type='bridge'><mac address='52:54:00:%s:%02x:%02x'/><source bridge='%s'/></interface>" "$mac3" $((i / 256)) $((i % 256)) "$bridge"
            printf "</devices></domain>\n"
        done
        echo "</node>"
    } >"$file"
}

# bench_once_ms CMD...: wall time of one run of CMD (output discarded), in ms.
bench_once_ms() {
    local t0
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1
    echo $((($(date +%s%N) - t0) / 1000000))
}
