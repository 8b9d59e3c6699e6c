#!/usr/bin/env bash
# Demo certificates for the mTLS example, made with openssl: a CA, the gateway's server
# certificate, the gateway's client certificate for the upstream, client certificates that work
# and that fail (expired, revoked, from another CA), and the CA's CRL. For trying the example on
# your machine only: the keys are unencrypted.
set -euo pipefail
out="${1:-$(dirname "$0")/certs}"
mkdir -p "$out"
cd "$out"
days_ago () { date -u -d "$1 days ago" +%Y%m%d%H%M%SZ; }
in_days () { date -u -d "$1 days" +%Y%m%d%H%M%SZ; }

# A small CA database, so that openssl can set any validity window, revoke and issue a CRL.
rm -rf ca.db && mkdir -p ca.db && : > ca.db/index && echo 1000 > ca.db/serial && echo 1000 > ca.db/crlnumber
cat > ca.cnf <<CNF
[ca]
default_ca = demo
[demo]
database = ca.db/index
serial = ca.db/serial
crlnumber = ca.db/crlnumber
new_certs_dir = ca.db
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = copy
[anything]
commonName = supplied
[ca_ext]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
[leaf]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
CNF

ecparam="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ecparam -keyout ca.key -out ca.crt -subj "/CN=Portcullis demo CA" -days 3650 -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -x509 $ecparam -keyout other-ca.key -out other-ca.crt -subj "/CN=Some other CA" -days 3650 -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# issue <name> <subject> <subjectAltName> <start> <end>
issue () {
  openssl req $ecparam -keyout "$1.key" -out "$1.csr" -subj "$2" -addext "subjectAltName=$3" 2>/dev/null
  openssl ca -batch -config ca.cnf -extensions leaf -in "$1.csr" -out "$1.crt" -startdate "$4" -enddate "$5" -notext 2>/dev/null
  rm "$1.csr"
}
issue server "/CN=localhost" "DNS:localhost,IP:127.0.0.1" "$(days_ago 1)" "$(in_days 365)"
issue gateway "/CN=gateway" "URI:spiffe://demo.example/ns/edge/sa/gateway" "$(days_ago 1)" "$(in_days 365)"
issue orders "/CN=orders" "URI:spiffe://demo.example/ns/shop/sa/orders" "$(days_ago 1)" "$(in_days 365)"
issue reports "/CN=reports" "URI:spiffe://demo.example/ns/shop/sa/reports" "$(days_ago 1)" "$(in_days 365)"
issue expired "/CN=expired" "URI:spiffe://demo.example/ns/shop/sa/expired" "$(days_ago 60)" "$(days_ago 30)"
issue revoked "/CN=revoked" "URI:spiffe://demo.example/ns/shop/sa/revoked" "$(days_ago 1)" "$(in_days 365)"

# A certificate that looks like orders', from a CA the gateway does not trust.
openssl req $ecparam -keyout impostor.key -out impostor.csr -subj "/CN=orders" -addext "subjectAltName=URI:spiffe://demo.example/ns/shop/sa/orders" 2>/dev/null
openssl x509 -req -in impostor.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -out impostor.crt -days 365 -copy_extensions copy 2>/dev/null
rm impostor.csr

openssl ca -batch -config ca.cnf -revoke revoked.crt 2>/dev/null
openssl ca -batch -config ca.cnf -gencrl -out ca.crl 2>/dev/null
echo "certificates in $(pwd)"
