"""Password hashing with argon2id, off the event loop (hashing is deliberately slow).

argon2 runs in its own small pool of threads, at most one per two cores: each run takes
64 MiB and tens of milliseconds of a core, so a burst of logins (a restart, many pollers
whose remembered passwords lapse together) queues here instead of taking every core and
hundreds of megabytes from the requests being served meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile
ARGON2_THREADS = max(1, (os.cpu_count() or 2) // 2)
_argon2_pool = ThreadPoolExecutor(ARGON2_THREADS, thread_name_prefix="argon2")


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, _hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, verify)
