"""Password hashes: crackable offline, so a leaked one is a leaked password.

Written from the crypt(3) formats' public descriptions (``$id$salt$hash``) and the
Kerberos hash formats that password crackers read; a hash is never a placeholder's
shape, so no entropy gate.
"""

from __future__ import annotations

from ..detector import Detector, rx

_B64 = r"[./A-Za-z0-9]"

DETECTORS: tuple[Detector, ...] = (
    Detector(
        id="password-hash",
        title="Password hash in crypt(3) form (bcrypt, md5-crypt, sha256/512-crypt, "
        "yescrypt, Cisco type 8/9, argon2)",
        # The salt or cost after the id, so that a run of "$1$" anchors nothing.
        anchor=rb"\$(?:(?:1|2[abxy]?|[5689y])\$[./A-Za-z0-9]{2}|argon2(?:id|i|d)\$[vm]=)",
        value=rx(
            r"(?P<secret>"
            rf"\$1\${_B64}{{1,8}}\${_B64}{{22}}"
            rf"|\$2[abxy]?\$[0-9]{{2}}\${_B64}{{53}}"
            rf"|\$[56]\$(?:rounds=[0-9]{{1,9}}\$)?{_B64}{{1,16}}\$(?:{_B64}{{86}}|{_B64}{{43}})"
            rf"|\$[89]\${_B64}{{14}}\${_B64}{{43}}"
            rf"|\$y\${_B64}{{1,16}}\${_B64}{{1,86}}\${_B64}{{43}}"
            r"|\$argon2(?:id|i|d)\$(?:v=[0-9]{1,3}\$)?m=[0-9]{1,8},t=[0-9]{1,4},p=[0-9]{1,3}"
            r"\$[A-Za-z0-9+/]{11,88}\$[A-Za-z0-9+/]{16,88}"
            r")(?![./A-Za-z0-9])"
        ),
    ),
    Detector(
        id="kerberos-hash",
        title="Kerberos AS-REP or TGS hash ($krb5asrep$, $krb5tgs$), as roasting prints it",
        anchor=rb"\$krb5(?:asrep|tgs)\$",
        value=rx(
            # The etype (23 for RC4, 17/18 for AES, absent in John's format) and the
            # account (user@realm: or *user$realm$spn*$) are optional; the checksum is 32
            # hex digits for RC4 and 24 for AES; Rubeus prints upper-case hex.
            r"(?P<secret>\$krb5(?:asrep|tgs)\$(?:[0-9]{2}\$)?(?:\S{0,256}?[$:])?"
            r"(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{24})\$[0-9a-fA-F]{64,8192})"
        ),
        window=9000,
    ),
)
