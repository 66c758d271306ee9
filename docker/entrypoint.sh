#!/bin/sh
# The image's entrypoint: the credentials compose's `setup` service wrote, then the command.
#
# Under compose, /run/ladder holds them (docker/setup.py): the broker URLs and Flower's
# login go into the command's environment here, never into compose.yaml, a command line
# or a log. Without that volume (a plain `docker run`), the command runs as it is.
set -eu
if [ -r /run/ladder/env ]; then
    set -a
    . /run/ladder/env
    set +a
fi
# Started as root (the demo is): run as whoever owns the project folder, so that what it
# writes in ./results is theirs.
if [ "$(id -u)" = 0 ] && [ -r /run/ladder/owner ]; then
    owner=$(cat /run/ladder/owner)
    export HOME=/tmp
    exec setpriv --reuid="${owner%:*}" --regid="${owner#*:}" --clear-groups -- "$@"
fi
exec "$@"
