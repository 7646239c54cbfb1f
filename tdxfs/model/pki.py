"""The simulated platform PKI: a root CA, a PCK Platform CA, the platform's PCK certificate,
a TCB signing certificate, their CRLs, and the QE's attestation key.

SIMULATED. Every key is generated locally by ``cryptography``; none is Intel's. The common
names are Intel's exactly (``Intel SGX Root CA``, ``Intel SGX PCK Platform CA``, ``Intel SGX
PCK Certificate``, ``Intel SGX TCB Signing``), because some verifiers compare them
literally and find the PCK CA by its name; everything else says SIMULATED:

- the organization (O) is ``tdxfs SIMULATED PKI - not Intel Corporation`` and the
  organizational unit (OU) ``SIMULATED - not issued by Intel, trust only as a test root``,
  in subject and issuer alike (Intel's say ``O=Intel Corporation`` and carry no OU);
- every serial number starts with the eight bytes ``tdxfsSIM`` (``SERIAL_MARKER``; hex
  ``746478667353494d``), followed by 12 random bytes;
- every certificate carries the non-critical extension ``SIMULATION_OID``
  (``1.3.6.1.4.1.32473.1``, under the enterprise number RFC 5612 reserves for examples)
  whose value is the UTF8String ``SIMULATION_NOTICE``;
- the CRL distribution points name ``tdxfs.invalid`` (a reserved domain that never
  resolves), and the FMSPC is one no Intel part has.

A quote signed under this PKI verifies only for a relying party that was told to trust
*this* root (its key is this platform's own).

A PKI kept by an older version (the same format, with ``tdxfs SIMULATED ... - not Intel``
common names and random serials) still loads: :meth:`PlatformPki.from_blobs` re-issues its
four certificates with the current names, marker serial and extension, as PCS re-issues
certificates, keeping every key and validity period. The re-issue is deterministic (RFC 6979
signatures, serials derived from the old certificates), so every load of one old file gives
byte-identical certificates: the daemon's quotes and ``tdxfs pki export`` agree even if the
file is never rewritten. ``renamed`` tells the caller to save it. A relying party that
trusted the old root must export the root again (its name changed).

The shapes follow Intel's PCS certificate profile, because DCAP verifiers check them:

======================  ===============  ===================================  ==================
certificate             issuer           basic constraints, key usage (crit)  validity
======================  ===============  ===================================  ==================
Root CA                 itself           CA, pathlen 1; certSign, cRLSign     to 2049-12-31 (as Intel's)
PCK Platform CA         Root CA          CA, pathlen 0; certSign, cRLSign     15 years
PCK (per platform)      PCK Platform CA  not a CA; digitalSignature, nonRep.  7 years
TCB Signing             Root CA          not a CA; digitalSignature, nonRep.  7 years
======================  ===============  ===================================  ==================

All ECDSA P-256 with SHA-256, with subject/authority key identifiers and a CRL
distribution point, and no extended key usage (verifiers built on webpki would demand
serverAuth if there were one). The PCK certificate carries the SGX extension
(OID 1.2.840.113741.1.13.1, non-critical): PPID, TCB (16 CPUSVN components, PCESVN,
CPUSVN), PCE-ID, FMSPC, SGX type, and - as Platform CA certificates do - the platform
instance ID and configuration. CRLs are issued on demand (they expire, like PCS's: the
root CA CRL after a year, the PCK CRL after 30 days), never stored.

Certificates start one day before they are made, so a verifier whose clock is a little
behind the simulated platform's still accepts them.
"""

import datetime
import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, Mapping, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tdxfs.errors import ConfigError

FORMAT = "tdxfs-pki-v1"

# Identifiers of the simulated platform model (not of any Intel part).
FMSPC = bytes.fromhex("746478667300")  # "tdxfs\0": no Intel FMSPC looks like this
PCE_ID = bytes.fromhex("0000")  # Intel's PCE ID; verifiers only compare it with the TCB info
SGX_TYPE_SCALABLE = 1  # what PCK Platform CA certificates of TDX-capable parts carry

CPUSVN_SIZE = 16
PPID_SIZE = 16
PLATFORM_INSTANCE_ID_SIZE = 16

# Validity periods (Intel PCS).
ROOT_NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
PCK_CA_YEARS = 15
PCK_YEARS = 7
TCB_SIGNING_YEARS = 7
ROOT_CRL_DAYS = 365
PCK_CRL_DAYS = 30
CLOCK_SKEW = datetime.timedelta(days=1)

CRL_URL = "https://tdxfs.invalid/simulated-pki/{}.der"  # .invalid: never resolves (RFC 2606)

# The common names are Intel's, exactly: verifiers compare them (and pick the PCS
# "platform" CA by its name). The simulation is said by O, OU, serial and extension.
SUBJECTS = {
    "root_ca": "Intel SGX Root CA",
    "pck_ca": "Intel SGX PCK Platform CA",
    "pck": "Intel SGX PCK Certificate",
    "tcb_signing": "Intel SGX TCB Signing",
}
SUBJECT_O = "tdxfs SIMULATED PKI - not Intel Corporation"
SUBJECT_OU = "SIMULATED - not issued by Intel, trust only as a test root"

SERIAL_MARKER = b"tdxfsSIM"  # every serial number's first 8 of 20 bytes
_SERIAL_RANDOM = 12
# Under IANA's enterprise number for documentation and examples (RFC 5612: 32473), which no
# production PKI uses. Not a UUID OID (2.25.<uuid>): DCAP verifiers built on the Rust
# ``der`` crate refuse arcs over 32 bits ("malformed OID"), and fail the whole chain.
SIMULATION_OID = "1.3.6.1.4.1.32473.1"
SIMULATION_NOTICE = "tdxfs SIMULATED PKI: not issued by Intel; trust only as a tdxfs test root"

# -- the SGX extension, DER by hand ---------------------------------------------------------

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
# Arcs under SGX_EXTENSION_OID (Intel SGX PCK Certificate and CRL Profile).
_PPID, _TCB, _PCEID, _FMSPC, _SGX_TYPE, _PLATFORM_INSTANCE_ID, _CONFIGURATION = 1, 2, 3, 4, 5, 6, 7
# Under .2; .2.1 .. .2.16 are the CPUSVN components. A PCESVN of 0x8000 or more takes three
# INTEGER content bytes, which dcap-qvl 0.7 does not read (real PCE SVNs are small).
_TCB_PCESVN, _TCB_CPUSVN = 17, 18
_CONF_DYNAMIC_PLATFORM, _CONF_CACHED_KEYS, _CONF_SMT_ENABLED = 1, 2, 3  # under .7


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _unsigned(tag: int, value: int) -> bytes:
    """INTEGER or ENUMERATED: minimal two's complement of a non-negative value."""
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _seq(items: Iterable[bytes]) -> bytes:
    return _tlv(0x30, b"".join(items))


def _entry(arcs: str, value: bytes) -> bytes:
    return _seq([_oid(f"{SGX_EXTENSION_OID}.{arcs}"), value])


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _boolean(flag: bool) -> bytes:
    return _tlv(0x01, b"\xff" if flag else b"\x00")


@dataclass(frozen=True)
class PckTcb:
    """The TCB a PCK certificate is issued for: the platform's CPUSVN and PCE SVN."""

    cpusvn: bytes
    pcesvn: int

    def __post_init__(self):
        if len(self.cpusvn) != CPUSVN_SIZE:
            raise ValueError(f"CPUSVN is {CPUSVN_SIZE} bytes, got {len(self.cpusvn)}")
        if not 0 <= self.pcesvn < 1 << 16:
            raise ValueError(f"PCESVN {self.pcesvn} is not a u16")


def sgx_extension(ppid: bytes, tcb: PckTcb, platform_instance_id: bytes) -> bytes:
    """The DER value of the SGX extension: a SEQUENCE of (OID, value) SEQUENCEs."""
    components = [_entry(f"{_TCB}.{i + 1}", _unsigned(0x02, svn)) for i, svn in enumerate(tcb.cpusvn)]
    components.append(_entry(f"{_TCB}.{_TCB_PCESVN}", _unsigned(0x02, tcb.pcesvn)))
    components.append(_entry(f"{_TCB}.{_TCB_CPUSVN}", _octets(tcb.cpusvn)))
    configuration = _seq([
        _entry(f"{_CONFIGURATION}.{_CONF_DYNAMIC_PLATFORM}", _boolean(True)),
        _entry(f"{_CONFIGURATION}.{_CONF_CACHED_KEYS}", _boolean(True)),
        _entry(f"{_CONFIGURATION}.{_CONF_SMT_ENABLED}", _boolean(True)),
    ])
    return _seq([
        _entry(str(_PPID), _octets(ppid)),
        _entry(str(_TCB), _seq(components)),
        _entry(str(_PCEID), _octets(PCE_ID)),
        _entry(str(_FMSPC), _octets(FMSPC)),
        _entry(str(_SGX_TYPE), _unsigned(0x0A, SGX_TYPE_SCALABLE)),
        _entry(str(_PLATFORM_INSTANCE_ID), _octets(platform_instance_id)),
        _entry(str(_CONFIGURATION), configuration),
    ])


# -- certificates ----------------------------------------------------------------------------


def _name(role: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, SUBJECTS[role]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, SUBJECT_O),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SUBJECT_OU),
    ])


def _serial(tail: Optional[bytes] = None) -> int:
    """``SERIAL_MARKER`` then 12 bytes (random, or the given ones): 20 bytes, positive."""
    tail = os.urandom(_SERIAL_RANDOM) if tail is None else tail[:_SERIAL_RANDOM]
    return int.from_bytes(SERIAL_MARKER + tail, "big")


def is_simulated(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries all of tdxfs's simulation marks (O, OU, serial, extension)."""
    try:
        notice = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SIMULATION_OID)).value.value
    except x509.ExtensionNotFound:
        return False
    names = (cert.subject, cert.issuer)
    return (notice == _simulation_extension().value
            and cert.serial_number.to_bytes(20, "big").startswith(SERIAL_MARKER)
            and all(n.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == SUBJECT_O for n in names)
            and all(n.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == SUBJECT_OU
                    for n in names))


def _simulation_extension() -> x509.UnrecognizedExtension:
    notice = SIMULATION_NOTICE.encode()
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(SIMULATION_OID), _tlv(0x0C, notice))  # UTF8String


def _sign(builder: x509.CertificateBuilder, key, deterministic: bool) -> x509.Certificate:
    if deterministic:  # RFC 6979 (cryptography >= 45): a re-issue is the same bytes on every load
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return builder.sign(key, hashes.SHA256())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _years(start: datetime.datetime, years: int) -> datetime.datetime:
    return start.replace(year=start.year + years) if not (start.month == 2 and start.day == 29) \
        else start.replace(year=start.year + years, day=28)


def _cert(role: str, key, issuer_role: str, issuer_key, issuer_cert: Optional[x509.Certificate],
          not_before: datetime.datetime, not_after: datetime.datetime, ca_pathlen: Optional[int],
          crl: str, extra: Tuple[x509.ExtensionType, ...] = (), serial_tail: Optional[bytes] = None,
          deterministic: bool = False) -> x509.Certificate:
    """One certificate; ``ca_pathlen`` None makes an end entity. ``serial_tail`` and
    ``deterministic`` make a re-issue reproducible (see :meth:`PlatformPki.from_blobs`)."""
    ca = ca_pathlen is not None
    issuer_public = issuer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(role))
        .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(issuer_role))
        .public_key(key.public_key())
        .serial_number(_serial(serial_tail))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(CRL_URL.format(crl))],
            relative_name=None, reasons=None, crl_issuer=None)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=ca_pathlen), critical=True)
        .add_extension(_simulation_extension(), critical=False)
    )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return _sign(builder, issuer_key, deterministic)


def _pck_cert(key, ca_key, ca_cert: x509.Certificate, ppid: bytes, instance: bytes, tcb: PckTcb,
              start: datetime.datetime, end: Optional[datetime.datetime] = None, **reissue) -> x509.Certificate:
    extension = x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID),
                                           sgx_extension(ppid, tcb, instance))
    end = end or min(_years(start, PCK_YEARS), ca_cert.not_valid_after_utc)
    return _cert("pck", key, "pck_ca", ca_key, ca_cert, start, end, None, "pck-platform-ca",
                 extra=(extension,), **reissue)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def raw_public_key(key) -> bytes:
    """x || y, 64 bytes big-endian: how quotes carry a P-256 public key."""
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)[1:]


@dataclass(frozen=True)
class PlatformPki:
    """Every key and certificate of one simulated platform, plus its attestation key."""

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    pck_ca_cert: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck_cert: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_cert: x509.Certificate
    attestation_key: ec.EllipticCurvePrivateKey
    ppid: bytes
    platform_instance_id: bytes
    tcb: PckTcb
    # True when from_blobs re-issued an older version's certificates with the current
    # names: the caller should save this PKI (to_blobs) in place of what it loaded.
    renamed: bool = field(default=False, compare=False)

    # -- making ------------------------------------------------------------------------

    @classmethod
    def generate(cls, tcb: PckTcb, now: Optional[datetime.datetime] = None) -> "PlatformPki":
        start = (now or _now()) - CLOCK_SKEW
        root_key, pck_ca_key, tcb_key = _new_key(), _new_key(), _new_key()
        root = _cert("root_ca", root_key, "root_ca", root_key, None, start, ROOT_NOT_AFTER, 1, "root-ca")
        pck_ca = _cert("pck_ca", pck_ca_key, "root_ca", root_key, root, start,
                       min(_years(start, PCK_CA_YEARS), ROOT_NOT_AFTER), 0, "root-ca")
        tcb_cert = _cert("tcb_signing", tcb_key, "root_ca", root_key, root, start,
                         min(_years(start, TCB_SIGNING_YEARS), ROOT_NOT_AFTER), None, "root-ca")
        pck_key, ppid, instance = _new_key(), os.urandom(PPID_SIZE), os.urandom(PLATFORM_INSTANCE_ID_SIZE)
        return cls(root_key=root_key, root_cert=root, pck_ca_key=pck_ca_key, pck_ca_cert=pck_ca,
                   pck_key=pck_key, pck_cert=_pck_cert(pck_key, pck_ca_key, pck_ca, ppid, instance, tcb, start),
                   tcb_key=tcb_key, tcb_cert=tcb_cert, attestation_key=_new_key(), ppid=ppid,
                   platform_instance_id=instance, tcb=tcb)

    def reissue_pck(self, tcb: PckTcb, now: Optional[datetime.datetime] = None) -> "PlatformPki":
        """A PCK certificate for ``tcb`` (same key): PCS issues one per TCB level, and a
        platform whose CPUSVN or PCE SVN changed gets the matching one."""
        cert = _pck_cert(self.pck_key, self.pck_ca_key, self.pck_ca_cert, self.ppid, self.platform_instance_id,
                         tcb, (now or _now()) - CLOCK_SKEW)
        return replace(self, pck_cert=cert, tcb=tcb)

    # -- CRLs, issued on demand ----------------------------------------------------------

    def _crl(self, issuer_key, issuer_cert: x509.Certificate, days: int, now: Optional[datetime.datetime],
             revoked: Iterable[x509.Certificate] = (), number: int = 1) -> bytes:
        this_update = now or _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer_cert.subject)
            .last_update(this_update)
            .next_update(this_update + datetime.timedelta(days=days))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(this_update).build())
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def root_ca_crl(self, now: Optional[datetime.datetime] = None) -> bytes:
        """DER CRL of the root CA (revokes nothing): covers the PCK CA and the TCB signing cert."""
        return self._crl(self.root_key, self.root_cert, ROOT_CRL_DAYS, now)

    def pck_crl(self, now: Optional[datetime.datetime] = None, revoke_pck: bool = False) -> bytes:
        """DER CRL of the PCK Platform CA; ``revoke_pck`` lists this platform's PCK certificate."""
        return self._crl(self.pck_ca_key, self.pck_ca_cert, PCK_CRL_DAYS, now,
                         revoked=[self.pck_cert] if revoke_pck else (), number=2 if revoke_pck else 1)

    # -- chains ------------------------------------------------------------------------

    def root_der(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.DER)

    def root_cert_pem(self) -> str:
        return _pem_cert(self.root_cert)

    def pck_chain_pem(self) -> str:
        """What a type-5 certification data carries: PCK leaf, PCK Platform CA, root."""
        return "".join(_pem_cert(c) for c in (self.pck_cert, self.pck_ca_cert, self.root_cert))

    def pck_crl_issuer_chain_pem(self) -> str:
        return "".join(_pem_cert(c) for c in (self.pck_ca_cert, self.root_cert))

    def tcb_signing_chain_pem(self) -> str:
        return "".join(_pem_cert(c) for c in (self.tcb_cert, self.root_cert))

    # -- storage -----------------------------------------------------------------------

    def to_blobs(self) -> Dict[str, str]:
        """Named PEM blobs (and hex for the identifiers): what the state directory keeps."""
        return {
            "format": FORMAT,
            "root_ca.key": _pem_key(self.root_key),
            "root_ca.crt": _pem_cert(self.root_cert),
            "pck_ca.key": _pem_key(self.pck_ca_key),
            "pck_ca.crt": _pem_cert(self.pck_ca_cert),
            "pck.key": _pem_key(self.pck_key),
            "pck.crt": _pem_cert(self.pck_cert),
            "tcb_signing.key": _pem_key(self.tcb_key),
            "tcb_signing.crt": _pem_cert(self.tcb_cert),
            "attestation.key": _pem_key(self.attestation_key),
            "ppid": self.ppid.hex(),
            "platform_instance_id": self.platform_instance_id.hex(),
            "pck_tcb.cpusvn": self.tcb.cpusvn.hex(),
            "pck_tcb.pcesvn": str(self.tcb.pcesvn),
        }

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, str], where: str = "PKI") -> "PlatformPki":
        """The inverse of :meth:`to_blobs`; anything missing or unparsable is a ConfigError."""

        def bad(why: str) -> ConfigError:
            return ConfigError(f"{where} is corrupt ({why}); refusing to start. "
                               "Use --reset to start a fresh platform on purpose")

        if not isinstance(blobs, Mapping) or blobs.get("format") != FORMAT:
            raise bad(f"format is not {FORMAT}")
        try:
            keys = {name: serialization.load_pem_private_key(blobs[f"{name}.key"].encode(), None)
                    for name in ("root_ca", "pck_ca", "pck", "tcb_signing", "attestation")}
            certs = {name: x509.load_pem_x509_certificate(blobs[f"{name}.crt"].encode())
                     for name in ("root_ca", "pck_ca", "pck", "tcb_signing")}
            ppid = bytes.fromhex(blobs["ppid"])
            instance = bytes.fromhex(blobs["platform_instance_id"])
            tcb = PckTcb(bytes.fromhex(blobs["pck_tcb.cpusvn"]), int(blobs["pck_tcb.pcesvn"]))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # int(Infinity) too
            raise bad(f"{type(exc).__name__}: {exc}") from None
        for name, key in keys.items():
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise bad(f"{name} key is not ECDSA P-256")
        for name in certs:
            if not isinstance(certs[name].public_key(), ec.EllipticCurvePublicKey):
                raise bad(f"{name} certificate's key is not ECDSA P-256")
            if certs[name].public_key().public_numbers() != keys[name].public_key().public_numbers():
                raise bad(f"{name} certificate does not match its key")
        if len(ppid) != PPID_SIZE or len(instance) != PLATFORM_INSTANCE_ID_SIZE:
            raise bad("PPID or platform instance ID of the wrong length")
        pki = cls(root_key=keys["root_ca"], root_cert=certs["root_ca"], pck_ca_key=keys["pck_ca"],
                  pck_ca_cert=certs["pck_ca"], pck_key=keys["pck"], pck_cert=certs["pck"],
                  tcb_key=keys["tcb_signing"], tcb_cert=certs["tcb_signing"],
                  attestation_key=keys["attestation"], ppid=ppid, platform_instance_id=instance, tcb=tcb)
        return pki if pki.has_current_names() else pki._reissued_with_current_names()

    def _certs(self) -> Dict[str, x509.Certificate]:
        return {"root_ca": self.root_cert, "pck_ca": self.pck_ca_cert, "pck": self.pck_cert,
                "tcb_signing": self.tcb_cert}

    def has_current_names(self) -> bool:
        """Whether every certificate carries this version's subject and issuer names."""
        issuers = {"root_ca": "root_ca", "pck_ca": "root_ca", "pck": "pck_ca", "tcb_signing": "root_ca"}
        return all(cert.subject == _name(role) and cert.issuer == _name(issuers[role])
                   for role, cert in self._certs().items())

    def _reissued_with_current_names(self) -> "PlatformPki":
        """The four certificates again, with the current names and marks: same keys, same
        validity, serials derived from the old certificates, RFC 6979 signatures, so the
        result depends only on what was stored."""

        def tail(cert: x509.Certificate) -> bytes:
            return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()

        def kept(cert: x509.Certificate) -> dict:
            return dict(not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                        serial_tail=tail(cert), deterministic=True)

        root = _cert("root_ca", self.root_key, "root_ca", self.root_key, None, ca_pathlen=1, crl="root-ca",
                     **kept(self.root_cert))
        pck_ca = _cert("pck_ca", self.pck_ca_key, "root_ca", self.root_key, root, ca_pathlen=0, crl="root-ca",
                       **kept(self.pck_ca_cert))
        tcb_cert = _cert("tcb_signing", self.tcb_key, "root_ca", self.root_key, root, ca_pathlen=None,
                         crl="root-ca", **kept(self.tcb_cert))
        old = self.pck_cert
        pck = _pck_cert(self.pck_key, self.pck_ca_key, pck_ca, self.ppid, self.platform_instance_id, self.tcb,
                        old.not_valid_before_utc, old.not_valid_after_utc, serial_tail=tail(old),
                        deterministic=True)
        return replace(self, root_cert=root, pck_ca_cert=pck_ca, tcb_cert=tcb_cert, pck_cert=pck, renamed=True)

    def fingerprint(self) -> str:
        """SHA-256 of the root certificate (DER): names the trust anchor to relying parties."""
        return hashlib.sha256(self.root_der()).hexdigest()
