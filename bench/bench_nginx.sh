#!/usr/bin/env bash
# nginx in front of a small static file, side by side in one run (wrk):
#   none       no limit
#   limit_req  limit_req zone=... rate=R burst=B nodelay, key $http_x_key
#   shmlimit   shmlimit POLICY key=$http_x_key, the same rate and burst,
#              headers on (Retry-After, X-RateLimit-*, RateLimit-*)
# Each location is driven by wrk on 128 keys per wrk thread at 1000 r/s
# each (so requests are admitted and the cost measured is a decision, not a
# 429), ROUNDS times, interleaved; then 100 concurrent requests on one key
# at 20 r/m give the admitted counts (exactness) of limit_req and shmlimit.
# Prints a Markdown section: req/s (median of rounds) and p99 for each.
#
#   bash bench/bench_nginx.sh MODULE.so             (scripts/bench.sh runs it)
#   SHMLIMIT_NGINX_BENCH_ROUNDS=3 SHMLIMIT_NGINX_BENCH_SECONDS=5 \
#   SHMLIMIT_NGINX_BENCH_WORKERS=2 SHMLIMIT_NGINX_BENCH_CONNECTIONS=32 bash bench/bench_nginx.sh MODULE.so
#
# Needs Debian's nginx and wrk; as root, nginx's workers run as 'nobody'.
set -euo pipefail

module="$(realpath "${1:?usage: bench_nginx.sh path/to/ngx_http_shmlimit_module.so}")"
rounds="${SHMLIMIT_NGINX_BENCH_ROUNDS:-3}"
seconds="${SHMLIMIT_NGINX_BENCH_SECONDS:-5}"
workers="${SHMLIMIT_NGINX_BENCH_WORKERS:-2}"
connections="${SHMLIMIT_NGINX_BENCH_CONNECTIONS:-32}"
nginx="${SHMLIMIT_NGINX:-/usr/sbin/nginx}"

for tool in "$nginx" wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench_nginx.sh: $tool not found (Debian: nginx, wrk, curl)" >&2; exit 2; }
done

dir="$(mktemp -d /tmp/shmlimit-nginx-bench-XXXXXX)"
chmod 755 "$dir"
segment="/shmlimit-bench-$$-nginx"
port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  [[ -f "$dir/nginx.pid" ]] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$dir" "/dev/shm$segment"
}
trap cleanup EXIT
mkdir -p "$dir/html" "$dir/tmp"
head -c 612 /dev/zero | tr '\0' 'x' >"$dir/html/index.html"   # the size of nginx's welcome page
chmod -R a+rX "$dir/html"

# wrk cycles over 128 keys per thread: requests are admitted.
cat >"$dir/keys.lua" <<'EOF'
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args) c = 0 end
function request()
  c = c + 1
  return wrk.format("GET", nil, {["X-Key"] = "k" .. tid .. "-" .. (c % 128)})
end
EOF

cat >"$dir/nginx.conf" <<EOF
load_module $module;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log crit;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  root $dir/html;
  limit_req_zone \$http_x_key zone=lr:10m rate=1000r/s;
  limit_req_zone \$http_x_key zone=lr_exact:1m rate=20r/m;
  limit_req_status 429;
  shmlimit_segment $segment capacity=65536;
  shmlimit_policy api 1000r/s burst=20;
  shmlimit_policy exact 20r/m burst=20;
  server {
    listen 127.0.0.1:$port;
    location /none/ { try_files /index.html =404; }
    location /limit_req/ { limit_req zone=lr burst=19 nodelay; try_files /index.html =404; }
    location /shmlimit/ { shmlimit api key=\$http_x_key; try_files /index.html =404; }
    location /exact_lr/ { limit_req zone=lr_exact burst=19 nodelay; try_files /index.html =404; }
    location /exact_sl/ { shmlimit exact key=\$http_x_key; try_files /index.html =404; }
  }
}
EOF
"$nginx" -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/none/" && break; sleep 0.1; done

declare -A rps p99 codes
for r in $(seq "$rounds"); do
  for loc in none limit_req shmlimit; do
    out="$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$dir/keys.lua" "http://127.0.0.1:$port/$loc/" 2>&1)"
    rps[$loc]+="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") "
    p99[$loc]+="$(awk '$1 == "99%" {print $2}' <<<"$out") "
    codes[$loc]="$( (grep -o 'Non-2xx or 3xx responses: [0-9]*' <<<"$out" || true) | awk '{print $NF}')"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Exactness: 100 concurrent requests on one key at 20 r/m, burst 20 (one
# more every 3 s: a run longer than 3 s may admit 21).
exact() {
  seq 100 | xargs -P 32 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H 'X-Key: one' "http://127.0.0.1:$port/$1/" | grep -c '^200$' || true
}
lr_ok="$(exact exact_lr)"
sl_ok="$(exact exact_sl)"

echo "## nginx: no limit, limit_req and shmlimit (bench/bench_nginx.sh)"
echo
echo "nginx $("$nginx" -v 2>&1 | sed 's/.*nginx\///'), $workers workers; wrk -t2 -c$connections, ${seconds} s per run, $rounds rounds interleaved;"
echo "a $(stat -c %s "$dir/html/index.html")-byte static file; 128 keys per wrk thread; rate 1000r/s burst 20 for both limiters; shmlimit with its headers on."
echo
echo "| location | req/s (median) | req/s (each round) | p99 (each round) | non-2xx (last round) |"
echo "|---|---:|---|---|---:|"
for loc in none limit_req shmlimit; do
  printf '| %s | %s | %s | %s | %s |\n' "$loc" "$(median <<<"${rps[$loc]}")" "${rps[$loc]% }" "${p99[$loc]% }" "${codes[$loc]:-0}"
done
echo
echo "100 requests on one key, 32 at a time, rate 20r/m with 20 at once (limit_req burst=19 nodelay, shmlimit burst=20): limit_req admitted $lr_ok, shmlimit admitted $sl_ok."
