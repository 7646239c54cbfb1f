"""Collateral for the simulated platform, in Intel PCS formats, signed by the simulated PKI.

TCB info v3 (id "TDX") and QE identity v2 (id "TD_QE") are JSON documents signed by the
TCB signing key: PCS returns ``{"tcbInfo": BODY, "signature": HEX}`` (and
``{"enclaveIdentity": ...}``), where the signature is ECDSA-P256-SHA256 over the exact
bytes of BODY as they appear in the document, written as hex r||s. Verifiers check the
signature over those bytes, so BODY is serialised once and never re-formatted.

The bundle (:meth:`Collateral.bundle_json`) is the layout DCAP verification libraries load
directly (dcap-qvl's ``QuoteCollateralV3``): the issuer chains in PEM, the CRLs and the
signatures in hex, the two bodies as JSON strings.

TCB levels. They are fixed (they describe the simulated platform model, not a TD); a
profile picks its status by lowering the values its quotes carry. A verifier takes the
first level, in the order below, that every component of the quote meets (CPUSVN and PCE
SVN from the PCK certificate, TEE_TCB_SVN from the quote body):

=====  ==============================  =========================  ====  ======================
level  status                          CPUSVN (16 components)     PCE   TEE_TCB_SVN
=====  ==============================  =========================  ====  ======================
1      UpToDate                        04 04 02 18 ff 03 00..     13    05 01 03 00..
2      SWHardeningNeeded               04 04 02 18 ff 03 00..     13    05 01 02 00..
3      ConfigurationNeeded             03 04 02 18 ff 03 00..     13    05 01 03 00..
4      ConfigurationAndSWHardeningN.   03 04 02 18 ff 03 00..     13    05 01 02 00..
5      OutOfDate                       02 02 02 02 03 01 00..     5     00..
6      OutOfDateConfigurationNeeded    01 02 02 02 03 01 00..     5     00..
7      Revoked                         00..                       0     00..
=====  ==============================  =========================  ====  ======================

So, from the default profile (level 1): ``tee_tcb_info.tee_tcb_svn = "05010200..."`` gives
SWHardeningNeeded; ``cpusvn = "03040218ff03..."`` ConfigurationNeeded; both together
ConfigurationAndSWHardeningNeeded; ``pcesvn`` 5..12, a TDX module SVN (TEE_TCB_SVN[0])
below 5, or any CPUSVN component lower than level 3's (but not below level 5's) gives
OutOfDate; ``cpusvn = "01020202030100..."`` OutOfDateConfigurationNeeded; ``pcesvn`` below
5 Revoked. Levels 2-7 carry simulated advisory IDs (``TDXFS-SIM-SA-*``).

The TDX module identity (``tdxModuleIdentities``, "TDX_01" for module major version
TEE_TCB_SVN[1] = 1) has UpToDate from module SVN (TEE_TCB_SVN[0]) 5 and OutOfDate below,
agreeing with the levels above: verifiers that judge the module only by it (Intel QVL
skips TDX components 0 and 1 in the levels) and those that also compare all 16 components
(dcap-qvl, which takes the worse of the two) give the same status. ``tdxModule`` and the
identity expect MRSIGNERSEAM zero (Intel's module) and SEAM attributes zero, as the
default profile has; a module major version other than 1 has no identity and is refused.

QE identity: the simulated QE (``tdxfs.model.qe``) is UpToDate at ISVSVN 4.
"""

import datetime
import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tdxfs.model import qe
from tdxfs.model.abi.quote import SGX_REPORT_BODY
from tdxfs.model.pki import CLOCK_SKEW, FMSPC, PCE_ID, PlatformPki

TCB_INFO_VALIDITY = datetime.timedelta(days=30)  # PCS: nextUpdate = issueDate + 30 days
QE_IDENTITY_VALIDITY = datetime.timedelta(days=30)
TCB_EVALUATION_DATA_NUMBER = 17
TDX_MODULE_MAJOR = 1  # TEE_TCB_SVN[1] of the default profile: identity "TDX_01"
TDX_MODULE_UPTODATE_SVN = 5

# The component names PCS gives the first few of each list (the rest are unnamed).
_SGX_NAMES = {0: ("BIOS", "Early Microcode Update"), 1: ("OS/VMM", "SGX Late Microcode Update"),
              2: ("OS/VMM", "TXT SINIT"), 3: ("BIOS", None), 4: ("BIOS", None), 5: ("BIOS", None),
              7: ("OS/VMM", "SEAMLDR ACM")}
_TDX_NAMES = {0: ("OS/VMM", "TDX Module"), 1: ("OS/VMM", "TDX Module"), 2: ("OS/VMM", "TDX Late Microcode Update")}


def _svns(hex16: str) -> Tuple[int, ...]:
    raw = bytes.fromhex(hex16.ljust(32, "0"))
    return tuple(raw)


@dataclass(frozen=True)
class TcbLevel:
    status: str
    cpusvn: Tuple[int, ...]
    pcesvn: int
    tee_tcb_svn: Tuple[int, ...]
    date: str
    advisories: Tuple[str, ...] = ()


_UP = "04040218ff03"
_CONF = "03040218ff03"
TCB_LEVELS: Tuple[TcbLevel, ...] = (
    TcbLevel("UpToDate", _svns(_UP), 13, _svns("050103"), "2025-02-12T00:00:00Z"),
    TcbLevel("SWHardeningNeeded", _svns(_UP), 13, _svns("050102"), "2025-02-12T00:00:00Z",
             ("TDXFS-SIM-SA-00001",)),
    TcbLevel("ConfigurationNeeded", _svns(_CONF), 13, _svns("050103"), "2025-02-12T00:00:00Z",
             ("TDXFS-SIM-SA-00002",)),
    TcbLevel("ConfigurationAndSWHardeningNeeded", _svns(_CONF), 13, _svns("050102"), "2025-02-12T00:00:00Z",
             ("TDXFS-SIM-SA-00001", "TDXFS-SIM-SA-00002")),
    TcbLevel("OutOfDate", _svns("020202020301"), 5, _svns(""), "2023-08-09T00:00:00Z",
             ("TDXFS-SIM-SA-00003",)),
    TcbLevel("OutOfDateConfigurationNeeded", _svns("010202020301"), 5, _svns(""), "2023-08-09T00:00:00Z",
             ("TDXFS-SIM-SA-00002", "TDXFS-SIM-SA-00003")),
    TcbLevel("Revoked", _svns(""), 0, _svns(""), "2018-01-04T00:00:00Z", ("TDXFS-SIM-SA-00004",)),
)


def _components(svns: Sequence[int], names: Dict[int, Tuple[str, Optional[str]]]) -> List[dict]:
    out = []
    for i, svn in enumerate(svns):
        item: dict = {"svn": svn}
        if i in names:
            category, kind = names[i]
            item["category"] = category
            if kind:
                item["type"] = kind
        out.append(item)
    return out


def _level_json(level: TcbLevel) -> dict:
    doc = {
        "tcb": {
            "sgxtcbcomponents": _components(level.cpusvn, _SGX_NAMES),
            "pcesvn": level.pcesvn,
            "tdxtcbcomponents": _components(level.tee_tcb_svn, _TDX_NAMES),
        },
        "tcbDate": level.date,
        "tcbStatus": level.status,
    }
    if level.advisories:
        doc["advisoryIDs"] = list(level.advisories)
    return doc


def _time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tcb_info_body(issued: datetime.datetime) -> dict:
    zero48 = "00" * 48
    return {
        "id": "TDX",
        "version": 3,
        "issueDate": _time(issued),
        "nextUpdate": _time(issued + TCB_INFO_VALIDITY),
        "fmspc": FMSPC.hex(),
        "pceId": PCE_ID.hex(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "tdxModule": {"mrsigner": zero48.upper(), "attributes": "0000000000000000",
                      "attributesMask": "FFFFFFFFFFFFFFFF"},
        "tdxModuleIdentities": [{
            "id": f"TDX_{TDX_MODULE_MAJOR:02X}",
            "mrsigner": zero48.upper(),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
            "tcbLevels": [
                {"tcb": {"isvsvn": TDX_MODULE_UPTODATE_SVN}, "tcbDate": TCB_LEVELS[0].date, "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 0}, "tcbDate": TCB_LEVELS[4].date, "tcbStatus": "OutOfDate",
                 "advisoryIDs": ["TDXFS-SIM-SA-00003"]},
            ],
        }],
        "tcbLevels": [_level_json(level) for level in TCB_LEVELS],
    }


def qe_identity_body(issued: datetime.datetime) -> dict:
    mask = "FBFFFFFFFFFFFFFF0000000000000000"  # ignore DEBUG's neighbour bits as PCS does; XFRM free
    return {
        "id": "TD_QE",
        "version": 2,
        "issueDate": _time(issued),
        "nextUpdate": _time(issued + QE_IDENTITY_VALIDITY),
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": SGX_REPORT_BODY.fields["miscselect"].raw(qe.QE_MISCSELECT).hex().upper(),
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": mask,
        "mrsigner": qe.QE_MRSIGNER.hex().upper(),
        "isvprodid": qe.QE_ISVPRODID,
        "tcbLevels": [{"tcb": {"isvsvn": qe.QE_ISVSVN}, "tcbDate": TCB_LEVELS[0].date, "tcbStatus": "UpToDate"}],
    }


def _sign(key: ec.EllipticCurvePrivateKey, text: str) -> bytes:
    r, s = decode_dss_signature(key.sign(text.encode(), ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _serialise(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class Collateral:
    """Everything a verifier needs besides the quote and the root, issued at one time."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str  # the signed bytes of the TCB info body
    tcb_info_signature: bytes  # r || s
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def bundle(self) -> Dict[str, str]:
        """dcap-qvl's QuoteCollateralV3 JSON layout: bytes as hex, the rest as text."""
        return {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }

    def bundle_json(self) -> str:
        return json.dumps(self.bundle(), indent=2) + "\n"

    def tcb_info_document(self) -> str:
        """The PCS response body for ``GET /tdx/certification/v4/tcb``."""
        return '{"tcbInfo":' + self.tcb_info + ',"signature":"' + self.tcb_info_signature.hex() + '"}'

    def qe_identity_document(self) -> str:
        """The PCS response body for ``GET /tdx/certification/v4/qe/identity``."""
        return '{"enclaveIdentity":' + self.qe_identity + ',"signature":"' + self.qe_identity_signature.hex() + '"}'


def issue(pki: PlatformPki, issued: Optional[datetime.datetime] = None, revoke_pck: bool = False) -> Collateral:
    """Fresh collateral: TCB info, QE identity and both CRLs dated ``issued``.

    By default that is one day ago (``pki.CLOCK_SKEW``): verifiers refuse collateral issued
    in their future, and the relying party's clock may trail the simulated platform's. It
    stays valid 30 days from then (TCB info, QE identity, PCK CRL; the root CA CRL a year).
    ``revoke_pck`` issues a PCK CRL that lists this platform's PCK certificate, for relying
    parties that need to see a revoked platform refused.
    """
    if issued is None:
        issued = datetime.datetime.now(datetime.timezone.utc) - CLOCK_SKEW
    issued = issued.replace(microsecond=0)
    tcb_info = _serialise(tcb_info_body(issued))
    qe_identity = _serialise(qe_identity_body(issued))
    signing_chain = pki.tcb_signing_chain_pem()
    return Collateral(
        pck_crl_issuer_chain=pki.pck_crl_issuer_chain_pem(),
        root_ca_crl=pki.root_ca_crl(issued),
        pck_crl=pki.pck_crl(issued, revoke_pck=revoke_pck),
        tcb_info_issuer_chain=signing_chain,
        tcb_info=tcb_info,
        tcb_info_signature=_sign(pki.tcb_key, tcb_info),
        qe_identity_issuer_chain=signing_chain,
        qe_identity=qe_identity,
        qe_identity_signature=_sign(pki.tcb_key, qe_identity),
    )
