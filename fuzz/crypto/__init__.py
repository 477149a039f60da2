"""Cryptography every process shares: no gRPC, no process of its own.

:mod:`~fuzz.crypto.envelope` seals documents (AES-256-GCM envelopes with a key id),
:mod:`~fuzz.crypto.kms` gets their data keys from AWS KMS, :mod:`~fuzz.crypto.pki`
is the cluster CA (keys, CSRs, certificates, signatures) and
:mod:`~fuzz.crypto.proof` the signed registration a node proves itself with.
"""
