"""ixb wire protocol: envelope, message schemas, crypto, identifiers, subjects, errors.

Pure: no I/O, no clock reads, no asyncio. SPEC.md beside this file is the
normative description; vectors/ holds test vectors.
"""
