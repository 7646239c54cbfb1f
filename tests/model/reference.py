"""Expected values built by hand from shared/reference/tdx-abi.md, hashlib and hmac.

Nothing here imports tdxfs: the offsets are copied from the reference document so that a
wrong offset in ``tdxfs.model.abi`` cannot also make its own expectation.
"""

import hashlib
import hmac

TDREPORT_SIZE = 1024

# REPORTMACSTRUCT (tdx-abi.md section 2), absolute offsets: (offset, size)
REPORTTYPE = (0, 4)
CPUSVN = (16, 16)
TEE_TCB_INFO_HASH = (32, 48)
TEE_INFO_HASH = (80, 48)
REPORTDATA = (128, 64)
MAC = (224, 32)
MAC_INPUT = (0, 224)

# TEE_TCB_INFO: bytes 256..494 (239 bytes), then 17 reserved bytes to 511
TEE_TCB_INFO_REGION = (256, 239)
TEE_TCB_INFO = {
    "tee_tcb_info.valid": (256, 8),
    "tee_tcb_info.tee_tcb_svn": (264, 16),
    "tee_tcb_info.mrseam": (280, 48),
    "tee_tcb_info.mrsignerseam": (328, 48),
    "tee_tcb_info.attributes": (376, 8),
    "tee_tcb_info.tee_tcb_svn2": (384, 16),
}

# TDINFO_STRUCT: bytes 512..1023
TDINFO_REGION = (512, 512)
TDINFO = {
    "attributes": (512, 8),
    "xfam": (520, 8),
    "mrtd": (528, 48),
    "mrconfigid": (576, 48),
    "mrowner": (624, 48),
    "mrownerconfig": (672, 48),
}
RTMR = [(720, 48), (768, 48), (816, 48), (864, 48)]
SERVTD_HASH = (912, 48)

MAC_KEY_LABEL = b"tdxfs REPORTMACSTRUCT MAC key v1"  # documented in tdxfs/model/td.py

SEPT_VE_DISABLE_BIT = 28
DEBUG_BIT = 0

# The documented synthetic boot (tdxfs/model/profile.py, BOOT_EVENTS), in order.
BOOT_EVENTS = [
    ("mrtd", "tdxfs synthetic boot: TDVF boot firmware volume (BFV)"),
    ("mrtd", "tdxfs synthetic boot: TDVF TD HOB and TEMP_MEM pages"),
    ("rtmr0", "tdxfs synthetic boot: TD HOB"),
    ("rtmr0", "tdxfs synthetic boot: configuration firmware volume (CFV)"),
    ("rtmr0", "tdxfs synthetic boot: EV_SEPARATOR"),
    ("rtmr1", "tdxfs synthetic boot: EFI boot services application (vmlinuz)"),
    ("rtmr1", "tdxfs synthetic boot: EV_SEPARATOR"),
    ("rtmr2", "tdxfs synthetic boot: kernel command line console=hvc0 root=/dev/vda1 ro"),
    ("rtmr2", "tdxfs synthetic boot: initrd"),
]


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def extended(register: bytes, data: bytes) -> bytes:
    """TDG.MR.RTMR.EXTEND: SHA-384(register || data)."""
    return sha384(register + data)


def boot_registers() -> dict:
    regs = {name: bytes(48) for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")}
    for name, event in BOOT_EVENTS:
        regs[name] = extended(regs[name], sha384(event.encode()))
    return regs


def mac(secret: bytes, data: bytes) -> bytes:
    key = hmac.new(secret, MAC_KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(key, data, hashlib.sha256).digest()


def _put(buf: bytearray, where, value: bytes) -> None:
    offset, size = where
    assert len(value) == size, (where, len(value))
    buf[offset : offset + size] = value


def get(report: bytes, where) -> bytes:
    offset, size = where
    return bytes(report[offset : offset + size])


def expected_report(profile: dict, rtmrs, reportdata: bytes, secret: bytes) -> bytes:
    """The TDREPORT_STRUCT for profile fields (profile.py names), RTMRs and REPORTDATA."""
    out = bytearray(TDREPORT_SIZE)
    _put(out, REPORTTYPE, bytes([0x81, 0, 0, 0]))
    _put(out, CPUSVN, profile["cpusvn"])
    for name, where in TEE_TCB_INFO.items():
        _put(out, where, profile[name])
    for name, where in TDINFO.items():
        _put(out, where, profile[name])
    for i, where in enumerate(RTMR):
        _put(out, where, rtmrs[i])
    _put(out, TEE_TCB_INFO_HASH, sha384(get(out, TEE_TCB_INFO_REGION)))
    _put(out, TEE_INFO_HASH, sha384(get(out, TDINFO_REGION)))
    _put(out, REPORTDATA, reportdata)
    _put(out, MAC, mac(secret, get(out, MAC_INPUT)))
    return bytes(out)
