// Test PKI made with openssl at test time (nothing secret is committed):
//   ca.pem / ca.key            the test CA that lambdo is told to trust (SSL_CERT_FILE)
//   localhost.pem / .key       server certificate for DNS name "localhost", signed by the CA
//   wronghost.pem / .key       signed by the CA, but for "not-localhost.example"
//   rogue-ca.pem, untrusted.pem / .key   a certificate for "localhost" from a CA nobody trusts
// BearSSL does not match IP-address SANs, so servers are reached as https://localhost:PORT.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir, name) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name} test CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

function makeLeaf(dir, name, ca, dnsName) {
  writeFileSync(path.join(dir, `${name}.ext`),
    `subjectAltName=DNS:${dnsName}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${dnsName}`], dir);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`,
    '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`], dir);
}

let cached;

// Creates the PKI once per process and returns file paths plus PEM contents.
export function testCerts() {
  if (cached) return cached;
  const dir = mkdtempSync(path.join(tmpdir(), 'lambdo-certs-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'rogue-ca');
  makeLeaf(dir, 'localhost', 'ca', 'localhost');
  makeLeaf(dir, 'wronghost', 'ca', 'not-localhost.example');
  makeLeaf(dir, 'untrusted', 'rogue-ca', 'localhost');
  const file = (n) => path.join(dir, n);
  const pair = (n) => ({ cert: readFileSync(file(`${n}.pem`)), key: readFileSync(file(`${n}.key`)),
    certFile: file(`${n}.pem`), keyFile: file(`${n}.key`) });
  cached = {
    dir,
    caFile: file('ca.pem'),
    ca: readFileSync(file('ca.pem')),
    localhost: pair('localhost'),
    wronghost: pair('wronghost'),
    untrusted: pair('untrusted'),
  };
  return cached;
}
