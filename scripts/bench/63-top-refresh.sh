#!/usr/bin/env bash
# `vmctl top`'s refresh over 200 running domains on a libvirt test-driver node file
# (test:///PATH/node.xml: in-process, no daemon). A steady-state refresh is one libvirt round
# trip (the bulk domain-stats call); vmctl measures its own time for it and reports it as
# `refresh_ms` in `top --once --json`. Next to it, the per-domain way: the first refresh, which
# reads every domain's XML (one call per domain, `first_refresh_ms`). Target: refresh < 50 ms.
# RUNS runs each; medians. Env: VMCTL_BIN, RUNS (default 11).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_vmctl
runs=${RUNS:-11}
n=200
work=$(mktemp -d /tmp/vmctl-bench-top.XXXXXX)
trap 'rm -rf "$work"' EXIT

bench_node_file "$work/node.xml" "$n" top 02 gvbbench0
uri="test://$work/node.xml"
steady=() first=()
for ((i = 0; i < runs; i++)); do
    "$VMCTL_BIN" --connect "$uri" top --once --json >"$work/out.json"
    got=$(python3 - "$work/out.json" "$n" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["view"]["vms"]) == int(sys.argv[2]), f'{len(d["view"]["vms"])} VMs shown'
assert d["round_trips"] == 1, f'steady refresh took {d["round_trips"]} round trips'
print(d["refresh_ms"], d["first_refresh_ms"])
PY
)
    read -r s f <<<"$got"
    steady+=("$s") first+=("$f")
done
s_ms=$(printf '%s\n' "${steady[@]}" | bench_median)
f_ms=$(printf '%s\n' "${first[@]}" | bench_median)
s_spread=$(printf '%s\n' "${steady[@]}" | bench_spread)
printf '%-52s %10s\n' "vmctl top refresh, $n domains, median of $runs" "ms"
printf '%-52s %10.2f (spread %.2f)\n' "bulk stats (steady state, 1 round trip)" "$s_ms" "$s_spread"
printf '%-52s %10.2f\n' "per-domain XML reads (first refresh, $n + 7 calls)" "$f_ms"
bench_result "vmctl top refresh, $n domains" "$(printf '%.2f ms' "$s_ms")" \
    "per-domain reads: $(printf '%.2f ms' "$f_ms")" "< 50 ms" "$(bench_check "$s_ms < 50")" \
    "$(awk -v a="$s_ms" -v b="$f_ms" 'BEGIN { printf "%.2fx", a / b }')"
[[ $(bench_check "$s_ms < 50") == pass ]]
