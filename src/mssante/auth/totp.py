"""Time-based one-time codes (TOTP, RFC 6238) for interactive logins.

Codes are RFC 6238's defaults, the ones every authenticator app reads from an ``otpauth://``
URI: HMAC-SHA1, 6 digits, a 30-second time step counted from the Unix epoch (§4). A code is
accepted for the current step and one step either side, for clocks that drift and people who
type slowly (§5.2, "at most one time step"). A code once accepted cannot be used again: the
last accepted step is kept and only later steps pass (§5.2: "the verifier MUST NOT accept the
second attempt of the OTP after the successful validation").

Storage, without a column of its own (``store.models.Credential``): a TOTP credential's
``secret`` is the base32 shared secret; its ``last_used_at`` is the *start of the time step* of
the last code accepted (at most 30 s from the real time of use). ``last_used_at`` empty means
enrolment not yet confirmed: confirmation consumes a first valid code, which sets it.
"""

from __future__ import annotations

import hmac
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pyotp
import segno

STEP_SECONDS = 30  # RFC 6238 §4: X, the default time step
DIGITS = 6
TOLERANCE_STEPS = 1  # RFC 6238 §5.2: one step of network delay / drift either side
SECRET_BASE32_CHARS = 32  # 160 bits, the key length RFC 4226 §4 (R6) recommends
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # RFC 6238 §4: T0 = 0


class CodeCheck(StrEnum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class CodeResult:
    check: CodeCheck
    step: int | None = None  # the time step matched, when accepted


@dataclass(frozen=True)
class TotpEnrolment:
    """What a person needs to set up their authenticator app. ``uri`` holds the secret: show it
    to that person only, never log it."""

    login: str
    credential_id: int
    uri: str

    def qr_svg(self) -> str:
        return qr_svg(self.uri)

    def qr_png(self) -> bytes:
        return qr_png(self.uri)


def new_secret() -> str:
    return pyotp.random_base32(length=SECRET_BASE32_CHARS)


def provisioning_uri(secret: str, login: str, issuer: str) -> str:
    """The ``otpauth://totp/ISSUER:LOGIN?secret=…&issuer=…`` URI that apps scan."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=login, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    svg: str = segno.make(uri, error="m", micro=False).svg_inline(scale=4)
    return svg


def qr_png(uri: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(buffer, kind="png", scale=6, border=4)
    return buffer.getvalue()


def step_at(unix_time: float) -> int:
    """RFC 6238 §4: T = floor((Current Unix time - T0) / X)."""
    return int(unix_time // STEP_SECONDS)


def step_start(step: int) -> datetime:
    return EPOCH + timedelta(seconds=step * STEP_SECONDS)


def step_of(moment: datetime) -> int:
    return step_at((moment - EPOCH).total_seconds())


def code_for(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def check_code(secret: str, code: str, *, now: float, last_step: int | None) -> CodeResult:
    """Whether ``code`` is valid now (±1 step) and newer than ``last_step``.

    Every candidate step is compared in constant time, whatever matched before, so the answer
    takes the same time for a right and a wrong code."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return CodeResult(CodeCheck.WRONG)
    current = step_at(now)
    matched: list[int] = []
    for step in range(current - TOLERANCE_STEPS, current + TOLERANCE_STEPS + 1):
        if hmac.compare_digest(code_for(secret, step).encode(), code.encode()):
            matched.append(step)
    fresh = [s for s in matched if last_step is None or s > last_step]
    if fresh:
        return CodeResult(CodeCheck.ACCEPTED, max(fresh))
    return CodeResult(CodeCheck.REPLAYED if matched else CodeCheck.WRONG)
