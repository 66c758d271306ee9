#!/bin/sh
# compose's `demo` service: `ladder demo` on the compose workers, then where to look and
# how to stop. Its arguments are ladder demo's (DEMO_ARGS).
set -u
ladder demo "$@" &
ladder=$!
# A stop (docker compose stop, Ctrl-C) reaches this shell, PID 1, which would otherwise
# ignore it: pass it on to ladder, which stops what it started and exits.
trap 'kill -TERM "$ladder" 2>/dev/null' INT TERM
while :; do
    wait "$ladder"
    status=$?
    # wait also returns when a trapped signal arrives: go on until ladder has exited.
    kill -0 "$ladder" 2>/dev/null || break
done
cat <<END

Flower shows this demo's tasks: http://127.0.0.1:${FLOWER_PORT:-5555}
  user ${FLOWER_BASIC_AUTH%%:*}; its password: docker compose exec flower cat /run/ladder/flower-login
Redis, the workers and Flower stay up. Stop them all: docker compose down
  (docker compose down -v also forgets Redis's data and the generated passwords)
END
exit "$status"
