"""Every time tolerance that can make a dynamic QR acceptable, and the lifetimes derived from them.

One admission per QR holds only if the QR's used-marker outlives the last moment at which any
path could still accept that QR. Each path's acceptance rule and each marker's lifetime are
computed here and nowhere else, so that a new tolerance cannot widen a path without also
lengthening the markers (tests/validation/test_timing.py holds them together over every
parameter).

Times are unix seconds. `at` is the time the phone signed into the QR (covered by the device
signature, so a gate cannot move it); `scanned` is the gate's claim of when it read the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.ticketcodec import check_freshness

if TYPE_CHECKING:
    from services.validation.settings import ValidationSettings

MARGIN_S = 5  # Redis expires a key up to a few ms late, never early; whole seconds round down


@dataclass(frozen=True, slots=True)
class Tolerances:
    qr_window_s: int  # a QR is fresh this long after the phone signed it
    qr_skew_s: int  # a phone clock may run this far ahead of the gate's
    request_window_s: int  # a signed gate request's timestamp may be this far from the server's
    scan_lag_s: int  # a gate's scan time is trusted this far in the past (queued on a slow link)
    upload_horizon_s: int  # offline decisions are reconciled until the QR is this old
    clock_tolerance_s: int  # validation processes and Redis agree on the time within this

    @classmethod
    def from_settings(cls, settings: ValidationSettings) -> Tolerances:
        return cls(
            qr_window_s=int(settings.qr_window.total_seconds()),
            qr_skew_s=int(settings.qr_skew.total_seconds()),
            request_window_s=int(settings.device_window.total_seconds()),
            scan_lag_s=int(settings.scan_lag.total_seconds()),
            upload_horizon_s=int(settings.offline_upload_horizon.total_seconds()),
            clock_tolerance_s=int(settings.clock_tolerance.total_seconds()),
        )

    # The online decision (POST /v1/validations) ------------------------------------------------

    def scan_time(self, scanned: int, now: int) -> int:
        """The scan time a decision uses: the gate's when plausible, else the server's."""
        return scanned if now - self.scan_lag_s <= scanned <= now else now

    def freshness(self, at: int, scan_time: int) -> str | None:
        """None when a QR signed at `at` is fresh at `scan_time`, else the reason it is not."""
        return check_freshness(at, scan_time, self.qr_window_s, self.qr_skew_s)

    def accepts_online(self, at: int, scanned: int, now: int) -> bool:
        return self.freshness(at, self.scan_time(scanned, now)) is None

    @property
    def online_horizon_s(self) -> int:
        """After `at`, the last server time at which some claimed scan time makes it fresh."""
        return self.qr_window_s + self.scan_lag_s

    # Offline decisions uploaded later (POST /v1/validations/batch) -------------------------------

    def accepts_upload(self, at: int, now: int) -> bool:
        """An upload still changes state (rides, trips, markers) until the QR is this old;
        later ones are reported to operators but change nothing."""
        return now <= at + self.upload_horizon_s

    # Lifetimes ------------------------------------------------------------------------------------

    @property
    def last_acceptance_s(self) -> int:
        """After `at`, the last server time at which any path accepts the QR."""
        return max(self.online_horizon_s, self.upload_horizon_s)

    def marker_expires_at(self, at: int) -> int:
        """When a QR's used-marker (online or offline) may go: after every path's last
        acceptance, on any validation process's clock (each may lag Redis's)."""
        return at + self.last_acceptance_s + self.clock_tolerance_s + MARGIN_S

    @property
    def nonce_ttl_s(self) -> int:
        """A gate request's nonce outlives the window in which its timestamp is accepted:
        from `stamp - window` (the first moment it could be used) to `stamp + window`."""
        return 2 * self.request_window_s + self.clock_tolerance_s + MARGIN_S
