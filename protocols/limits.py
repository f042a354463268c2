"""Every size, count and time bound of the wire format, in one place.

Two layers:

- module constants (``MAX_…``) are the protocol's hard maxima. They are part
  of the spec: schemas are declared with them, and a conforming peer never
  sends more. Changing one is a protocol version change.
- :class:`Limits` holds the bounds a deployment may tighten at run time (a
  hub may accept smaller envelopes than the protocol allows, never larger).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.errors import ConfigError

# Hard protocol maxima (SPEC.md §Limits).
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
MAX_RECIPIENTS = 256
MAX_HOPS = 16
MAX_ID_CHARS = 40  # agency / hub ids, "CC/NAME"
MAX_SHORT_TEXT = 256  # names, references, labels
MAX_TEXT = 32 * 1024  # free-text narratives
MAX_LIST = 256  # subjects, waypoints, measures …
MAX_MRZ_LINES = 3
MAX_ATTACHMENTS = 8  # files sealed with one alert
MAX_ATTACHMENT_BYTES = 256 * 1024  # one file
MAX_ATTACHMENTS_TOTAL = 512 * 1024  # all files of one alert: its envelope stays under 1 MiB

MS_PER_SECOND = 1000
MS_PER_HOUR = 3600 * MS_PER_SECOND
MS_PER_DAY = 24 * MS_PER_HOUR


@dataclass(frozen=True, slots=True)
class Limits:
    """Run-time bounds applied when decoding and checking an envelope."""

    max_envelope_bytes: int = 1024 * 1024
    max_recipients: int = 64
    max_hops: int = 8
    max_clock_skew_ms: int = 5 * 60 * MS_PER_SECOND
    max_ttl_ms: int = 31 * MS_PER_DAY

    def __post_init__(self) -> None:
        for name, value, ceiling in (
            ("max_envelope_bytes", self.max_envelope_bytes, MAX_ENVELOPE_BYTES),
            ("max_recipients", self.max_recipients, MAX_RECIPIENTS),
            ("max_hops", self.max_hops, MAX_HOPS),
        ):
            if not 1 <= value <= ceiling:
                raise ConfigError(f"limits.{name}={value} must be within 1..{ceiling}")
        if self.max_clock_skew_ms < 0:
            raise ConfigError("limits.max_clock_skew_ms must not be negative")
        if self.max_ttl_ms <= 0:
            raise ConfigError("limits.max_ttl_ms must be positive")


DEFAULT_LIMITS = Limits()
