"""The quote v4 ABI: offsets from the reference, the QE's layout, decode/encode both ways."""

import hashlib
import json

import pytest

from tdxfs.errors import DeviceError
from tdxfs.model import quote as q
from tdxfs.model.profile import profile_from_mapping
from tests.model.conftest import distinct_mapping
from tests.quote import reference as ref
from tests.quote.conftest import NONCE, make_td


def test_named_offsets_match_the_reference():
    f = q.QUOTE_FIELDS
    expected = {
        "header.version": ref.VERSION, "header.attestation_key_type": ref.ATTESTATION_KEY_TYPE,
        "header.tee_type": ref.TEE_TYPE, "header.qe_svn": ref.QE_SVN, "header.pce_svn": ref.PCE_SVN,
        "header.qe_vendor_id": ref.QE_VENDOR_ID, "header.user_data": ref.USER_DATA,
        "signature_data_size": ref.SIGNATURE_DATA_LEN, "signature": ref.SIGNATURE,
        "attestation_key": ref.ATTESTATION_KEY, "cert_data.type": ref.CERT_DATA_TYPE,
        "cert_data.size": ref.CERT_DATA_SIZE, "qe_report_signature": ref.QE_REPORT_SIGNATURE,
        "qe_auth_data.size": ref.QE_AUTH_DATA_SIZE,
        **{f"body.{name}": where for name, (where, _) in ref.BODY.items()},
    }
    for sgx, where in [("cpusvn", ref.SGX_CPUSVN), ("miscselect", ref.SGX_MISCSELECT),
                       ("attributes", ref.SGX_ATTRIBUTES), ("mrenclave", ref.SGX_MRENCLAVE),
                       ("mrsigner", ref.SGX_MRSIGNER), ("isvprodid", ref.SGX_ISVPRODID),
                       ("isvsvn", ref.SGX_ISVSVN), ("reportdata", ref.SGX_REPORTDATA)]:
        expected[f"qe_report.{sgx}"] = (ref.QE_REPORT[0] + where[0], where[1])
    for name, (offset, size) in expected.items():
        assert (f[name].offset, f[name].size) == (offset, size), name
    assert (q.SIGNED.start, q.SIGNED.stop) == (0, ref.SIGNED[1])
    assert (q.QE_REPORT.start, q.QE_REPORT.stop - q.QE_REPORT.start) == ref.QE_REPORT
    assert q.FIXED_SIZE == ref.QE_AUTH_DATA_START


def test_header_is_a_v4_ecdsa_p256_tdx_quote_from_intels_qe_vendor_id(quote, pki):
    assert ref.u(quote, ref.VERSION) == 4
    assert ref.u(quote, ref.ATTESTATION_KEY_TYPE) == 2
    assert ref.u(quote, ref.TEE_TYPE) == 0x81
    assert ref.get(quote, ref.QE_VENDOR_ID) == ref.INTEL_QE_VENDOR_ID
    assert ref.u(quote, ref.PCE_SVN) == pki.tcb.pcesvn == 13
    assert ref.u(quote, ref.QE_SVN) == ref.u(quote, (ref.QE_REPORT[0] + ref.SGX_ISVSVN[0], 2))
    assert ref.get(quote, ref.USER_DATA)[16:] == bytes(4)  # QE ID in the first 16 bytes


def test_body_is_copied_field_by_field_from_the_tdreport():
    """A profile with distinct bytes in every field: each body field at its reference
    offset equals the TDREPORT bytes at theirs."""
    td = make_td(distinct_mapping())
    td.extend(3, bytes([0x77]) * 48)
    report = td.report(NONCE)
    quote = td.qe(report)
    for name, (in_quote, in_report) in ref.BODY.items():
        assert ref.get(quote, in_quote) == ref.get(report, in_report), name
    assert ref.get(quote, ref.BODY["reportdata"][0]) == NONCE


def test_certification_data_is_type_6_wrapping_a_type_5_pem_chain(quote, pki):
    auth, kind, length, chain = ref.tail(quote)
    assert ref.u(quote, ref.CERT_DATA_TYPE) == 6
    assert kind == 5 and length == len(chain)
    assert chain == pki.pck_chain_pem().encode()
    assert chain.count(b"-----BEGIN CERTIFICATE-----") == 3
    # the sizes add up to the end of the quote
    assert ref.u(quote, ref.CERT_DATA_SIZE) == len(quote) - (ref.CERT_DATA_SIZE[0] + 4)
    assert ref.u(quote, ref.SIGNATURE_DATA_LEN) == len(quote) - ref.SIGNED[1] - 4
    assert len(auth) == 32


def test_qe_report_binds_the_attestation_key_and_auth_data(quote):
    auth, _, _, _ = ref.tail(quote)
    qe_reportdata = ref.sub(quote, ref.QE_REPORT, ref.SGX_REPORTDATA)
    assert qe_reportdata == ref.qe_binding(ref.get(quote, ref.ATTESTATION_KEY), auth)


def test_qe_report_and_its_signature_are_constant_per_platform(td):
    one, two = td.quote(bytes(64)), td.quote(bytes([1]) * 64)
    start = ref.ATTESTATION_KEY[0]
    assert one[start:] == two[start:]  # key, QE report, its signature, auth data, chain
    assert one[ref.SIGNATURE[0]:start] != two[ref.SIGNATURE[0]:start]


def test_signatures_verify_with_the_keys_they_name(quote, pki):
    """The quote signature over [0, 632) by the attestation key; the QE report by the PCK."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    def der(raw):
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + ref.get(quote, ref.ATTESTATION_KEY))
    key.verify(der(ref.get(quote, ref.SIGNATURE)), ref.get(quote, ref.SIGNED), ec.ECDSA(hashes.SHA256()))
    pki.pck_cert.public_key().verify(der(ref.get(quote, ref.QE_REPORT_SIGNATURE)), ref.get(quote, ref.QE_REPORT),
                                     ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.verify(der(ref.get(quote, ref.SIGNATURE)), ref.get(quote, (0, 631)), ec.ECDSA(hashes.SHA256()))


def test_decode_encode_round_trip(quote):
    fields = q.decode(quote)
    assert q.encode(fields) == quote
    # every byte is accounted for: the named rows plus the variable tail
    assert sum(len(v) for v in fields.values()) == len(quote)
    # a changed field lands at its offset and nowhere else
    fields["body.mrowner"] = bytes([0xEE]) * 48
    changed = q.encode(fields)
    assert ref.get(changed, ref.BODY["mrowner"][0]) == bytes([0xEE]) * 48
    assert changed[:280] == quote[:280] and changed[328:] == quote[328:]


def test_decode_refuses_truncated_quotes(quote):
    for size in (0, 631, q.FIXED_SIZE - 1, q.FIXED_SIZE + 10, len(quote) - 1):
        with pytest.raises(ValueError):
            q.decode(quote[:size])


def test_as_json_names_integers_and_the_chain(quote):
    doc = json.loads(json.dumps(q.as_json(quote)))
    assert doc["header.version"] == 4 and doc["header.tee_type"] == 0x81
    assert doc["body.reportdata"] == NONCE.hex()
    assert doc["pck_cert_data.type"] == 5
    assert doc["pck_cert_chain"].startswith("-----BEGIN CERTIFICATE-----")
    assert doc["qe_auth_data"] == bytes(range(32)).hex()


def test_qe_refuses_a_report_from_another_platform_with_eio(td):
    other = make_td()
    with pytest.raises(DeviceError) as exc:
        td.qe(other.report(NONCE))
    assert exc.value.errno == 5  # EIO: a failed GetQuote
    tampered = bytearray(td.report(NONCE))
    tampered[600] ^= 1  # TDINFO: TEE_INFO_HASH no longer matches
    with pytest.raises(DeviceError):
        td.qe(bytes(tampered))
    with pytest.raises(DeviceError):
        td.qe(b"short")


def test_quote_hook_needs_a_qe():
    from tdxfs.model.td import Platform, TrustDomain

    bare = TrustDomain(Platform(), profile_from_mapping({}))
    with pytest.raises(DeviceError):
        bare.quote(NONCE)


def test_qe_identity_values_in_the_report(quote):
    from tdxfs.model import qe

    assert ref.sub(quote, ref.QE_REPORT, ref.SGX_MRSIGNER) == qe.QE_MRSIGNER
    assert ref.sub(quote, ref.QE_REPORT, ref.SGX_MRSIGNER) == hashlib.sha256(
        b"tdxfs SIMULATED TD quoting enclave signer").digest()
    assert int.from_bytes(ref.sub(quote, ref.QE_REPORT, ref.SGX_ISVPRODID), "little") == 2
    assert ref.sub(quote, ref.QE_REPORT, ref.SGX_ATTRIBUTES)[0] & 0x02 == 0  # not a debug QE


def test_concurrent_quotes_are_each_well_signed(td):
    """The QE holds no mutable state: threads quoting at once each get a valid quote."""
    import threading

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    results, errors = {}, []

    def worker(n):
        try:
            for i in range(40):
                nonce = bytes([n, i]) * 32
                results[(n, i)] = (nonce, td.quote(nonce))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 160
    key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + ref.get(next(iter(results.values()))[1], ref.ATTESTATION_KEY))
    for nonce, quote in results.values():
        assert ref.get(quote, ref.BODY["reportdata"][0]) == nonce
        sig = ref.get(quote, ref.SIGNATURE)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, ref.get(quote, ref.SIGNED), ec.ECDSA(hashes.SHA256()))
