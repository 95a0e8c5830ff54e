"""Password hashing with argon2id (argon2-cffi), parameters of RFC 9106's second recommended
option (64 MiB, 3 passes). Hashes carry their parameters, so a change here re-hashes at the next
successful login (:func:`needs_rehash`)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12


def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)


def hash_password(password: str, ph: PasswordHasher | None = None) -> str:
    return (ph or hasher()).hash(password)


def verify_password(stored_hash: str, password: str, ph: PasswordHasher | None = None) -> bool:
    try:
        return (ph or hasher()).verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str, ph: PasswordHasher | None = None) -> bool:
    return (ph or hasher()).check_needs_rehash(stored_hash)


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None. Length over composition rules (NIST SP 800-63B)."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if password.strip() != password:
        return "a password cannot start or end with spaces"
    return None
