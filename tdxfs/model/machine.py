"""The whole simulated machine in one call: platform, PKI, quoting enclave and TD.

Every front end gets its TD here and never assembles the parts itself: the daemons (libfuse
and kernel transports), ``tdxfs run`` and mount(8)'s helper call :func:`build_td`, with
``--profile`` read by ``profile_or_default``; ``tdxfs pki export`` without a state
directory, the benchmark's in-process methods and the tests take :func:`in_memory_td`,
its case without one. Either way the TD's ``quote()`` works.

What the start-up has to tell the operator (a profile register the event log cannot
reproduce, a state directory migrated from the format before event logs, a torn record
dropped) is in ``td.notices``, one line each: the front end logs them where its
operator looks (the daemon: its log, once that is set up).
"""

from typing import Callable, Optional, Tuple

from tdxfs.errors import ConfigError
from tdxfs.model.pki import PlatformPki
from tdxfs.model.profile import TdProfile
from tdxfs.model.qe import QuotingEnclave
from tdxfs.model.state import StateDir, pck_tcb
from tdxfs.model.td import Platform, TrustDomain

Closer = Callable[[], None]


def _nothing() -> None:
    pass


def in_memory_td(profile: TdProfile) -> TrustDomain:
    """A fresh platform (secret, PKI, QE) and TD that live as long as the process."""
    platform = Platform()
    pki = PlatformPki.generate(pck_tcb(profile))
    return TrustDomain(platform, profile, qe=QuotingEnclave(platform, pki))


def build_td(profile: TdProfile, state_dir: Optional[str] = None, reset: bool = False) -> Tuple[TrustDomain, Closer]:
    """The TD to serve and the function that releases what holds it.

    With ``state_dir`` the platform secret, PKI, attestation key and registers are kept
    there (durable, locked against a second daemon; refusals are ConfigError); the closer
    releases the lock. Without it everything is in memory and the closer does nothing.
    """
    if state_dir is None:
        if reset:
            raise ConfigError("--reset needs --state DIR (without it every mount starts fresh)")
        td, closer = in_memory_td(profile), _nothing
    else:
        state = StateDir(state_dir, reset=reset)
        try:
            td, closer = state.open_td(profile), state.close
        except BaseException:
            state.close()
            raise
    return td, closer
