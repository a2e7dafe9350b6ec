#!/bin/sh
# One-shot secrets of one chain for deploy/docker-compose.yml (its `init` service runs this
# in the coordinator image, as root, with one volume per consumer mounted under $PKI_ROOT):
#
#   $PKI_ROOT/ca/             the chain CA (ca.crt, ca.key, issued/, crl-number): this step only
#   $PKI_ROOT/coordinator/    tls.key/.csr/.crt, ca.crt, log-signing-key.pem
#   $PKI_ROOT/<chain>-<dept>/ tls.key/.csr/.crt, signing.key/.csr, credential.crt, ca.crt,
#                             revocations.crl, log-public-key.txt
#
# It plays every party of the production flow, each in its own folder: a service runs
# `creditshare pki request` where its keys will live (the private keys never leave that
# folder) and sends the .csr; the chain operator runs `creditshare pki sign` at the CA and
# sends back the .crt; the operator publishes `creditshare pki crl` (daily in production).
#
# Idempotent: what exists is kept. A new CA would invalidate every certificate it issued,
# and a new ledger key every receipt the nodes have accepted, so neither is ever replaced;
# rotate a leaf by hand (move its folder's tls.* away, run this again).
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

if [ ! -f "$coordinator/tls.crt" ]; then
    # On the coordinator's host: its own TLS key and request.
    if [ ! -f "$coordinator/tls.key" ]; then
        creditshare pki request --id "coordinator-$CHAIN" --role coordinator --out "$coordinator"
    fi
    # At the chain CA: certify the request, send back the certificate.
    creditshare pki sign --ca-dir "$ca" --csr "$coordinator/tls.csr" --out "$coordinator/tls.crt"
fi

if [ ! -f "$coordinator/log-signing-key.pem" ]; then
    creditshare coordinator init-key --out "$coordinator/log-signing-key.pem"
fi
# The public half, which every node pins (its log_public_key setting).
log_public_key="$(creditshare coordinator public-key --key-file "$coordinator/log-signing-key.pem")"

for department in $DEPARTMENTS; do
    node="$CHAIN-$department"
    folder="$PKI_ROOT/$node"
    if [ ! -f "$folder/tls.key" ]; then
        # On the node's host. The coordinator dials the node by its service name: that name
        # must be in the certificate (gRPC checks the target against the SANs).
        creditshare pki request --id "$node" --role node --host "$node" --host localhost \
            --out "$folder"
    fi
    if [ ! -f "$folder/tls.crt" ]; then
        creditshare pki sign --ca-dir "$ca" --csr "$folder/tls.csr" --out "$folder/tls.crt"
    fi
    if [ ! -f "$folder/credential.crt" ]; then
        creditshare pki sign --ca-dir "$ca" --csr "$folder/signing.csr" \
            --out "$folder/credential.crt"
    fi
    printf '%s\n' "$log_public_key" > "$folder/log-public-key.txt"
done

# The chain's revocation list, signed and dated; nodes refuse to decide on an old one, so
# in production the operator publishes a fresh one daily (`creditshare pki crl`).
if [ ! -f "$ca/revocations.crl" ]; then
    creditshare pki crl --ca-dir "$ca" --out "$ca/revocations.crl" --valid-hours 168
fi
for department in $DEPARTMENTS; do
    if [ ! -f "$PKI_ROOT/$CHAIN-$department/revocations.crl" ]; then
        cp "$ca/revocations.crl" "$PKI_ROOT/$CHAIN-$department/revocations.crl"
    fi
done

if [ -n "$OWNER" ]; then
    chown -R "$OWNER" "$ca" "$coordinator"
    for department in $DEPARTMENTS; do
        chown -R "$OWNER" "$PKI_ROOT/$CHAIN-$department"
    done
fi
echo "chain $CHAIN: CA, coordinator identity, ledger key, nodes ($DEPARTMENTS) and CRL ready"
