// Test PKI made with openssl at test time (nothing secret is committed):
//   ca.pem / ca.key            the test CA that lambdo is told to trust (SSL_CERT_FILE)
//   localhost.pem / .key       server certificate for DNS name "localhost", signed by the CA
//   wronghost.pem / .key       signed by the CA, but for "not-localhost.example"
//   rogue-ca.pem, untrusted.pem / .key   a certificate for "localhost" from a CA nobody trusts
//   ip4, ip6                   signed by the CA with only an iPAddress SAN: 127.0.0.1, ::1
//                              (their CN is a word, so only the SAN can match)
//   dns127                     signed by the CA with SAN DNS:127.0.0.1 (refused for the IP)
//   cn127                      signed by the CA, CN=127.0.0.1 and no SAN at all (refused too)
//   ip4big                     IP:127.0.0.1 among 500 DNS names: over 8 KiB (TLS_EE_MAX)
// Servers are normally reached as https://localhost:PORT.
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

// san: the subjectAltName value (null: none); cn: the subject's CN.
function makeLeaf(dir, name, ca, dnsName, { san = `DNS:${dnsName}`, cn = dnsName } = {}) {
  writeFileSync(path.join(dir, `${name}.ext`), `${san ? `subjectAltName=${san}\n` : ''}`
    + 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
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
  makeLeaf(dir, 'ip4', 'ca', null, { san: 'IP:127.0.0.1', cn: 'lambdo ip test' });
  makeLeaf(dir, 'ip6', 'ca', null, { san: 'IP:::1', cn: 'lambdo ip test' });
  makeLeaf(dir, 'dns127', 'ca', '127.0.0.1');
  makeLeaf(dir, 'cn127', 'ca', null, { san: null, cn: '127.0.0.1' });
  const many = Array.from({ length: 500 }, (_, i) => `DNS:name-${i}.example`).join(',');
  makeLeaf(dir, 'ip4big', 'ca', null, { san: `${many},IP:127.0.0.1`, cn: 'lambdo ip test' });
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
    ip4: pair('ip4'),
    ip6: pair('ip6'),
    dns127: pair('dns127'),
    cn127: pair('cn127'),
    ip4big: pair('ip4big'),
  };
  return cached;
}
