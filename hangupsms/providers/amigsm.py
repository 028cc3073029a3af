"""SMS through the PBX's own GSM modem (`kind: ami-gsm`): one AMI action per message.

chan_dongle registers `DongleSendSMS` (Device, Number, Message, optional Validity in minutes
and Report), chan_quectel `QuectelSendSMS` (Device, Number, Message). Both only queue the
message for the modem and answer at once (chan_dongle manager.c and helpers.c):

    Response: Success                      Response: Error
    Message: [dongle0] SMS queued for send  Message: [dongle0] Invalid destination number
    ID: 0x55d0c5a3e2a0                     ID: (nil)

A Success is taken as sent: the modem's own verdict (`DongleSMSStatus`) comes later as an
event and is not waited for. An Error means nothing was queued, so a resend can never text
anyone twice: every Error is retried (the device is unplugged, not registered yet, its
queue full, the module reloading) except those no retry can fix (the number or our own
request). The action goes out on the daemon's AMI connection to that PBX; see
`AmiGsmProvider` for what a lost or silent connection means.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Protocol

from hangupsms.ami import AmiActionTimeout, AmiConnectionLost, AmiNotConnected, AmiNotSent
from hangupsms.config import ProviderConfig
from hangupsms.models import (
    LookupResult,
    LookupStatus,
    OutboundMessage,
    SendResult,
    SendStatus,
)

ACTIONS = {"dongle": "DongleSendSMS", "quectel": "QuectelSendSMS"}
# Error reasons no retry can fix: the number, or the request itself (helpers.c, manager.c).
PERMANENT_ERRORS = (
    "invalid destination number", "number not specified", "message not specified",
    "device not specified",
)  # fmt: skip
_DEVICE_PREFIX = re.compile(r"^\[[^\]]*\]\s*")  # chan_dongle puts "[device] " before a reason
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NO_ID = ("", "(nil)", "0x0", "0")


class AmiActions(Protocol):
    """The part of `hangupsms.ami.AmiConnection` a modem provider uses."""

    async def send_action(self, action: Mapping[str, str], timeout: float = 5.0  # noqa: ASYNC109
                          ) -> Mapping[str, str]: ...


class AmiGsmProvider:
    """Sends through chan_dongle or chan_quectel on the AMI connection `connection`.

    The connection is the daemon's own to that PBX (shared with the event stream): it is
    already logged in, kept alive and reconnected, and AMI correlates a response by its
    ActionID, so the events in between are not disturbed. Not logged in: nothing was
    written, TRANSIENT. No answer within `timeout`, or the connection lost while waiting:
    the action may have reached the modem, AMBIGUOUS. `connection` is None outside
    `hangupsms run` (`replay`): every send is then TRANSIENT and waits for the daemon.

    A modem keeps no record we could ask, so `lookup` always answers UNAVAILABLE: an
    ambiguous send is never resent, and after the provider's `max_lookups` it stays
    `unknown` for a human to check the modem's sent messages.
    """

    def __init__(self, cfg: ProviderConfig, connection: AmiActions | None) -> None:
        if cfg.module not in ACTIONS:
            raise ValueError(f"unknown GSM module {cfg.module!r}")
        self.name = cfg.name
        self._cfg = cfg
        self._connection = connection

    def action(self, message: OutboundMessage) -> dict[str, str]:
        """The AMI action for `message`; ValueError if its text cannot travel in a header."""
        # An AMI header ends at a line break: one in the body would end the action early
        # and turn the rest into headers (or into a second action). chan_dongle reads no
        # escape, so a line break is sent as a space.
        body = _LINE_BREAK.sub(" ", message.body)
        if any(ord(char) < 32 and char != "\t" for char in body + message.to):
            raise ValueError("the message holds a control character an AMI header cannot carry")
        cfg = self._cfg
        action = {"Action": ACTIONS[cfg.module], "Device": cfg.device, "Number": message.to,
                  "Message": body}
        if cfg.validity is not None:
            action["Validity"] = str(cfg.validity)
        if cfg.report:
            action["Report"] = "yes"
        return action

    async def send(self, message: OutboundMessage) -> SendResult:
        if self._connection is None:
            return SendResult(SendStatus.TRANSIENT, detail=f"no AMI connection to pbx "
                              f"'{self._cfg.pbx}' here; the daemon sends it")
        try:
            action = self.action(message)
        except ValueError as exc:
            return SendResult(SendStatus.REJECTED, detail=str(exc))
        try:
            answer = await self._connection.send_action(action, timeout=self._cfg.timeout)
        except (AmiNotConnected, AmiNotSent) as exc:
            return SendResult(SendStatus.TRANSIENT, detail=f"AMI not connected: {exc}")
        except AmiActionTimeout:
            return SendResult(SendStatus.AMBIGUOUS,
                              detail=f"no answer from the PBX within {self._cfg.timeout}s")
        except AmiConnectionLost as exc:
            return SendResult(SendStatus.AMBIGUOUS, detail=f"AMI connection lost: {exc}")
        return classify(answer)

    async def lookup(
        self, message: OutboundMessage, since: float, *, exclude: Collection[str] = ()
    ) -> LookupResult:
        return LookupResult(
            LookupStatus.UNAVAILABLE,
            detail="a GSM modem cannot be asked whether it sent a message",
        )

    async def close(self) -> None:
        """Nothing to close: the connection belongs to the daemon."""


def classify(answer: Mapping[str, str]) -> SendResult:
    """What one answer to DongleSendSMS / QuectelSendSMS means for retrying."""
    headers = {name.lower(): value for name, value in answer.items()}
    response = headers.get("response", "").strip()
    reason = _DEVICE_PREFIX.sub("", headers.get("message", "").strip())
    if response.lower() == "success":
        ident = headers.get("id", "").strip()
        return SendResult(SendStatus.ACCEPTED, provider_id=None if ident in _NO_ID else ident,
                          detail=reason)
    detail = f"{response or 'no Response'}: {reason or 'no reason given'}"
    if response.lower() != "error":
        # Neither yes nor no: whether the modem queued it is unknown.
        return SendResult(SendStatus.AMBIGUOUS, detail=f"unexpected answer {detail}")
    if reason.lower() in PERMANENT_ERRORS:
        return SendResult(SendStatus.REJECTED, error_code=reason, detail=detail)
    if reason.lower() == "permission denied":
        # Asterisk's answer when the manager user lacks the action's class.
        detail += " (chan_dongle's action needs `write = call` for the manager user)"
    # Not queued: safe to retry (device not found / not connected / not registered, queue
    # full, permission denied, the module not loaded), within the retry budget.
    return SendResult(SendStatus.TRANSIENT, error_code=reason or None, detail=detail)
