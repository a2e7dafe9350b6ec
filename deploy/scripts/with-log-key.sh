#!/bin/sh
# Entry point of the node containers in deploy/docker-compose.yml: runs `creditshare ARGS...`
# with the ledger's public key in CREDITSHARE_NODE_LOG_PUBLIC_KEY. init-chain.sh writes that
# key next to the node's certificate when it creates the ledger key, so it is not known
# when the settings file is written. (Kubernetes sets the variable from a ConfigMap.)
set -eu
CREDITSHARE_NODE_LOG_PUBLIC_KEY="$(cat "${LOG_PUBLIC_KEY_FILE:-/etc/creditshare/pki/log-public-key.txt}")"
export CREDITSHARE_NODE_LOG_PUBLIC_KEY
exec creditshare "$@"
