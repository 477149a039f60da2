"""The SSH public key Azure insists on, whose private half nobody keeps.

Azure will not create a Linux VM that has neither a password nor an SSH key. fuzz
never logs in to a node (there is no SSH anywhere in fuzz), so each process makes
one RSA key pair in memory, gives Azure the public half and drops the private
half: password login stays disabled and no one holds a key that opens the node.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@functools.cache
def unusable_public_key() -> str:
    """An OpenSSH ``ssh-rsa`` public key whose private key was never stored."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " fuzz-no-login"
