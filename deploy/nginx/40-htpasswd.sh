#!/bin/sh
# Writes the UI's htpasswd file from UI_USER and UI_PASSWORD_HASH when the nginx container
# starts (the official image runs executable /docker-entrypoint.d/*.sh before nginx).
# .env holds only the hash, so the password itself is never in a file, a variable or a log.
# Refuses to start without a hash, or with a password in its place: no default login exists.
set -eu

htpasswd_file="${UI_HTPASSWD_FILE:-/etc/nginx/htpasswd}"

if [ -z "${UI_USER:-}" ] || [ -z "${UI_PASSWORD_HASH:-}" ]; then
    echo "$0: UI_USER and UI_PASSWORD_HASH must be set (see deploy/README.deploy.md)" >&2
    exit 1
fi
case "$UI_USER" in
    *:*) echo "$0: UI_USER must not contain ':'" >&2; exit 1 ;;
esac
case "$UI_PASSWORD_HASH" in
    '$6$'* | '$5$'* | '$apr1$'* | '$2y$'* | '$2b$'*) ;;
    *)
        echo "$0: UI_PASSWORD_HASH is not a password hash; make one with" \
            "'openssl passwd -6' (see deploy/README.deploy.md)" >&2
        exit 1
        ;;
esac

umask 077
printf '%s:%s\n' "$UI_USER" "$UI_PASSWORD_HASH" > "$htpasswd_file"
# nginx's workers read the file as an unprivileged user: `nginx` in the official image,
# `www-data` with Debian's package.
for worker_group in nginx www-data; do
    if chgrp "$worker_group" "$htpasswd_file" 2> /dev/null; then
        chmod 640 "$htpasswd_file"
        break
    fi
done
echo "$0: UI login configured for user '$UI_USER'"
