#!/bin/sh
# One-shot secrets of one chain for deploy/docker-compose.yml (its `init` service runs this
# in the coordinator image, as root, with one volume per consumer mounted under $PKI_ROOT):
#
#   $PKI_ROOT/ca/             the chain CA (ca.crt, ca.key): mounted by this step only
#   $PKI_ROOT/coordinator/    coordinator-<chain>.crt/.key, ca.crt, log-signing-key.pem
#   $PKI_ROOT/<chain>-<dept>/ <chain>-<dept>.crt/.key, ca.crt, log-public-key.txt
#
# Idempotent: what exists is kept. A new CA would invalidate every certificate it issued,
# and a new ledger key every receipt the nodes have accepted, so neither is ever replaced;
# rotate by hand (`creditshare pki issue` replaces a leaf certificate in place).
set -eu

CHAIN="${CHAIN:-yrd}"
DEPARTMENTS="${DEPARTMENTS:-tax market social}"
PKI_ROOT="${PKI_ROOT:-/pki}"
# uid:gid the service images run as (node/Dockerfile, coordinator/Dockerfile); empty: keep.
OWNER="${OWNER-10001:10001}"

ca="$PKI_ROOT/ca"
coordinator="$PKI_ROOT/coordinator"

if [ ! -f "$ca/ca.crt" ]; then
    creditshare pki init --chain "$CHAIN" --out "$ca"
fi

if [ ! -f "$coordinator/coordinator-$CHAIN.crt" ]; then
    creditshare pki issue --ca-dir "$ca" --name "coordinator-$CHAIN" --role coordinator \
        --out "$coordinator"
fi

if [ ! -f "$coordinator/log-signing-key.pem" ]; then
    creditshare coordinator init-key --out "$coordinator/log-signing-key.pem"
fi
# The public half, which every node pins (its log_public_key setting).
log_public_key="$(creditshare coordinator public-key --key-file "$coordinator/log-signing-key.pem")"

for department in $DEPARTMENTS; do
    node="$CHAIN-$department"
    if [ ! -f "$PKI_ROOT/$node/$node.crt" ]; then
        # The coordinator dials the node by its service name: that name must be in the
        # certificate (gRPC checks the target against the subject alternative names).
        creditshare pki issue --ca-dir "$ca" --name "$node" --role node \
            --host "$node" --host localhost --out "$PKI_ROOT/$node"
    fi
    printf '%s\n' "$log_public_key" > "$PKI_ROOT/$node/log-public-key.txt"
done

if [ -n "$OWNER" ]; then
    chown -R "$OWNER" "$ca" "$coordinator"
    for department in $DEPARTMENTS; do
        chown -R "$OWNER" "$PKI_ROOT/$CHAIN-$department"
    done
fi
echo "chain $CHAIN: CA, coordinator identity, ledger key and nodes ($DEPARTMENTS) ready"
