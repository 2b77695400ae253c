#!/usr/bin/env bash
# A LAN made of network namespaces, for netscan's lab tests and the ARP benchmark.
#
#   netns-lan.sh up NAME BRIDGE_CIDR HOST...   build it; prints the ground truth "IP MAC" per host
#   netns-lan.sh down NAME                     delete NAME and its host namespaces
#   netns-lan.sh down-all                      delete every gvbscan-* namespace (leftovers)
#
# NAME must start with "gvbscan-". The scanner namespace NAME holds bridge br0 with BRIDGE_CIDR
# (for example 198.18.7.1/24). Each HOST is "IP[,noicmp]": its own namespace NAME-hK, joined to
# br0 by a veth, with IP and the bridge's prefix length and MAC 52:54:00:KK:CC:DD (K its index,
# CC.DD the address's last two octets). "noicmp" makes the host ignore pings. Giving one IP twice
# makes a duplicate-IP pair. Only 198.18.0.0/15 is accepted; nothing touches the root namespace.
set -euo pipefail

die() { echo "netns-lan: $*" >&2; exit 2; }

in_lab_range() { # 198.18.0.0/15 = 198.18.x.x and 198.19.x.x
    [[ $1 =~ ^198\.1[89]\.[0-9]+\.[0-9]+$ ]]
}

check_name() {
    [[ $1 =~ ^gvbscan-[A-Za-z0-9-]+$ ]] || die "namespace name must match gvbscan-[A-Za-z0-9-]+: $1"
    # netns names are file names; interface names are what limit us (veth names below are short).
}

namespaces_of() { # NAME and NAME-hK
    ip netns list | awk '{print $1}' | grep -E "^$1(-h[0-9]+)?\$" || true
}

down() {
    check_name "$1"
    local ns
    for ns in $(namespaces_of "$1"); do
        ip netns del "$ns" 2>/dev/null || true
    done
}

up() {
    local name=$1 cidr=$2
    shift 2
    check_name "$name"
    local bridge_ip=${cidr%/*} prefix=${cidr#*/}
    in_lab_range "$bridge_ip" || die "bridge address must be in 198.18.0.0/15: $cidr"
    [[ $prefix =~ ^[0-9]+$ && $prefix -ge 8 && $prefix -le 30 ]] || die "bad prefix: $cidr"
    [[ -z $(namespaces_of "$name") ]] || die "$name already exists; run: $0 down $name"
    local spec
    for spec in "$@"; do # validate everything before creating anything
        in_lab_range "${spec%%,*}" || die "host address must be in 198.18.0.0/15: ${spec%%,*}"
    done

    # Build everything, or nothing: a failure half-way removes what was made.
    trap 'down "$name"' ERR
    ip netns add "$name"
    ip -n "$name" link set lo up
    ip netns exec "$name" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$name" link add br0 address 02:00:00:00:00:01 type bridge
    ip -n "$name" addr add "$cidr" dev br0
    ip -n "$name" link set br0 up

    local k=0 ip flags ns mac o3 o4
    for spec in "$@"; do
        k=$((k + 1))
        ip=${spec%%,*}
        flags=${spec#"$ip"}
        ns="$name-h$k"
        IFS=. read -r _ _ o3 o4 <<<"$ip"
        mac=$(printf '52:54:00:%02x:%02x:%02x' "$k" "$o3" "$o4")
        ip netns add "$ns"
        ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$name" link add "v$k" type veth peer name eth0 netns "$ns"
        ip -n "$name" link set "v$k" master br0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 address "$mac"
        ip -n "$ns" addr add "$ip/$prefix" dev eth0
        ip -n "$ns" link set eth0 up
        if [[ $flags == *noicmp* ]]; then
            ip netns exec "$ns" sysctl -q -w net.ipv4.icmp_echo_ignore_all=1
        fi
        echo "$ip $mac"
    done
    trap - ERR
}

case "${1:-}" in
    up) [[ $# -ge 3 ]] || die "usage: $0 up NAME BRIDGE_CIDR HOST..."; shift; up "$@" ;;
    down) [[ $# -eq 2 ]] || die "usage: $0 down NAME"; down "$2" ;;
    down-all)
        for ns in $(ip netns list | awk '{print $1}' | grep -E '^gvbscan-' || true); do
            ip netns del "$ns" 2>/dev/null || true
        done
        ;;
    *) die "usage: $0 up NAME BRIDGE_CIDR HOST... | down NAME | down-all" ;;
esac
