# SPDX-License-Identifier: BSD-2-Clause
# Shared by the bench/*.sh scripts that start peers and measure server CPU:
# sourced, never run. Each function is what the scripts had written once
# each before.

# A free TCP port on 127.0.0.1 (the kernel picks it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The port from a "listening on 127.0.0.1:PORT" line of LOGFILE, or nothing
# once PID has exited or 10 s have passed.
wait_port() { # LOGFILE PID
    local p=""
    for _ in $(seq 100); do
        p=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$1" 2>/dev/null | head -1 | cut -d: -f2 || true)
        [ -n "$p" ] && break
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "$p"
}

# CPU seconds (utime + stime, all threads) of the processes given.
cpu_of() {
    cpu_split "$@" | awk '{ printf "%.3f", $1 + $2 }'
}

# User and system CPU seconds of PIDS, summed: "USER SYS".
cpu_split() {
    local u=0 s=0 tck f pu ps
    tck=$(getconf CLK_TCK)
    for p in "$@"; do
        # Fields after the ")" of the command name: utime is 12th, stime 13th.
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        read -r pu ps < <(echo "$f" | awk '{print $12, $13}')
        u=$((u + pu)) s=$((s + ps))
    done
    awk -v u="$u" -v s="$s" -v t="$tck" 'BEGIN { printf "%.3f %.3f", u / t, s / t }'
}

# The start of an nginx.conf for a peer with one worker on core 0, its pid
# and error log under DIR; the caller writes the rest of the http block
# and closes it.
nginx_conf_head() { # DIR
    cat <<NGX
worker_processes 1;
worker_cpu_affinity 01;
daemon on;
pid $1/nginx.pid;
error_log $1/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
NGX
}
