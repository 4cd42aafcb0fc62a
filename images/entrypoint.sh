#!/bin/bash
# Entry point of the Qustody single-user image.
#
# When the spawner hands over the server's hub API token on standard input
# (QUSTODY_TOKEN_ON_STDIN=1), it is read here and exported to the server process
# only, so the token never appears in the container's configuration
# (`docker inspect`). The spawner writes it right after the container starts; if
# it does not arrive in time the container exits with a message.
set -euo pipefail

if [[ "${QUSTODY_TOKEN_ON_STDIN:-0}" == "1" ]]; then
    unset QUSTODY_TOKEN_ON_STDIN
    if ! IFS= read -r -t "${QUSTODY_TOKEN_WAIT_SECONDS:-30}" JUPYTERHUB_API_TOKEN \
            || [[ -z "${JUPYTERHUB_API_TOKEN}" ]]; then
        echo "qustody: no hub API token arrived on standard input; exiting" >&2
        exit 78
    fi
    export JUPYTERHUB_API_TOKEN
    # A secrets claim ticket may follow (single use, short-lived). It goes to a 0600 file
    # on the tmpfs, not the environment (/proc/1/environ); the server extension reads and
    # deletes it.
    if [[ "${QUSTODY_TICKET_ON_STDIN:-0}" == "1" ]]; then
        if IFS= read -r -t 5 ticket && [[ -n "${ticket}" ]]; then
            runtime="${JUPYTER_RUNTIME_DIR:-/run/jupyter}"
            mkdir -p "${runtime}"
            chmod 0700 "${runtime}"
            (umask 077 && printf '%s' "${ticket}" > "${runtime}/.qustody-ticket")
            export QUSTODY_SECRETS_TICKET_FILE="${runtime}/.qustody-ticket"
        fi
        unset ticket runtime
    fi
fi
unset QUSTODY_TICKET_ON_STDIN
unset QUSTODY_TOKEN_WAIT_SECONDS

# Kernel connection files (which hold kernel keys) go to the tmpfs, never to home.
mkdir -p "${JUPYTER_RUNTIME_DIR:-/run/jupyter}"
chmod 0700 "${JUPYTER_RUNTIME_DIR:-/run/jupyter}"

# Only what the image and the spawner set reaches the server (not bash's own variables).
# (bash re-exports SHLVL on exec, so env removes it.)
unset PWD OLDPWD _
exec /usr/bin/env -u SHLVL "$@" </dev/null
