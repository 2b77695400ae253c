#!/usr/bin/env bash
# A local HTTP server for a directory on 127.0.0.1 (http_mirror.py: python3's http.server plus Range
# requests and an optional cut connection; in the background), the
# stand-in for internet mirrors: Ubuntu cloud images (`<codename>/current/<file>` + `SHA256SUMS`), the
# Talos factory's image paths, release ISOs. It serves the ROOT namespace's loopback: vmctl reaches it,
# guests on the lab bridge do not.
#
# Usage:
#   http-mirror.sh start DIR PORT    serve DIR on http://127.0.0.1:PORT/ (prints the URL)
#   http-mirror.sh stop DIR PORT     stop the server started for PORT (DIR is accepted and ignored)
#   http-mirror.sh ubuntu-layout DIR CODENAME FILE...
#                                    copy FILEs to DIR/CODENAME/current/ and write SHA256SUMS there
#                                    in the publisher's format ("<sha256> *<name>")
# With GVB_LAB_MIRROR_NETNS=vmlab the server runs inside the lab namespace instead: then a vmctl run
# under `ip netns exec vmlab` (as the e2e tests do) reaches it on 127.0.0.1:PORT, and with
# GVB_LAB_MIRROR_BIND=0.0.0.0 guests reach it on 198.18.0.1:PORT.
# GVB_LAB_MIRROR_CUT_AFTER=BYTES cuts the first transfer of each file after BYTES (to test resume).
# Pid and log files: $GVB_LAB_RUN/http-mirror-PORT.{pid,log}; the log has one line per request with its
# Range header.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lab/lib.sh
. "$here/lib.sh"

usage() { lab_die "usage: $0 start|stop DIR PORT | ubuntu-layout DIR CODENAME FILE..." "see the header of $0"; }

cmd=${1:-}
case $cmd in
    start | stop)
        [[ $# -eq 3 ]] || usage
        dir=$2 port=$3
        [[ $port =~ ^[0-9]+$ ]] || lab_die "port '$port' is not a number"
        mkdir -p "$GVB_LAB_RUN"
        pidfile=$GVB_LAB_RUN/http-mirror-$port.pid
        logfile=$GVB_LAB_RUN/http-mirror-$port.log
        ;;
    ubuntu-layout)
        [[ $# -ge 4 ]] || usage
        ;;
    *) usage ;;
esac

case $cmd in
    start)
        [[ -d $dir ]] || lab_die "$dir is not a directory"
        if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            lab_die "a mirror already runs on port $port (pid $(cat "$pidfile"))" "$0 stop $dir $port"
        fi
        ns=${GVB_LAB_MIRROR_NETNS:-}
        bind=${GVB_LAB_MIRROR_BIND:-127.0.0.1}
        in_ns=()
        [[ -n $ns ]] && in_ns=(ip netns exec "$ns")
        # `ip netns exec` execs python3, so $! is the server's pid either way.
        cut=()
        [[ -n ${GVB_LAB_MIRROR_CUT_AFTER:-} ]] && cut=(--cut-after "$GVB_LAB_MIRROR_CUT_AFTER")
        "${in_ns[@]}" python3 "$here/http_mirror.py" --bind "$bind" --directory "$dir" "${cut[@]}" "$port" \
            >"$logfile" 2>&1 </dev/null &
        echo $! >"$pidfile"
        if ! lab_wait_for 10 "http server on port $port" "${in_ns[@]}" curl -fsS -o /dev/null "http://127.0.0.1:$port/"; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
            lab_die "the HTTP server did not answer on port $port" "look at $logfile (port taken?)"
        fi
        lab_log "serving $dir on http://$bind:$port/ in netns ${ns:-root} (pid $(cat "$pidfile"), log $logfile)"
        echo "http://127.0.0.1:$port"
        ;;
    stop)
        if [[ -s $pidfile ]]; then
            pid=$(cat "$pidfile")
            # Only kill it if it still is our server (the pid may have been reused).
            if grep -q 'http_mirror.py' "/proc/$pid/cmdline" 2>/dev/null; then
                kill "$pid"
                lab_log "stopped mirror on port $port (pid $pid)"
            fi
            rm -f "$pidfile"
        fi
        ;;
    ubuntu-layout)
        dir=$2 codename=$3
        shift 3
        dest=$dir/$codename/current
        mkdir -p "$dest"
        for f in "$@"; do
            cp --reflink=auto "$f" "$dest/"
        done
        (cd "$dest" && for f in *; do [[ $f == SHA256SUMS* ]] || echo "$(sha256sum <"$f" | cut -d' ' -f1) *$f"; done) >"$dest/SHA256SUMS.new"
        mv "$dest/SHA256SUMS.new" "$dest/SHA256SUMS"
        lab_log "wrote $dest/SHA256SUMS ($(wc -l <"$dest/SHA256SUMS") files)"
        ;;
esac
