"""What happens to a sent message, scripted by its recipient so tests are deterministic.

Default SMS rules, by the last digit of `to`:

| digit | outcome (preset name)         | ENS events                                    | truth      |
|-------|-------------------------------|-----------------------------------------------|------------|
| 0     | delivered_after_transient     | SmsSent, SmsTransient 3002, SmsDelivered 4000 | delivered  |
| 1     | delivered_after_enroute       | SmsSent, SmsTransient 3000, SmsDelivered 4000 | delivered  |
| 2, 3  | delivered_after_two_transients| SmsSent, SmsTransient 3000 and 3002, SmsDelivered | delivered |
| 4     | delivered                     | SmsSent, SmsDelivered 4000                    | delivered  |
| 5     | bounced_expired               | SmsSent, SmsBounced 4501 Expired              | bounced    |
| 6     | not_sent_47                   | SmsNotSent statusCode "47"                    | not_sent   |
| 7     | sent_no_final                 | SmsSent only, no receipt ever                 | sent       |
| 8     | delivered_ens_lost            | none (ENS loses every event)                  | delivered  |
| 9     | delivered_transient_late      | SmsSent, SmsDelivered, then SmsTransient 3001 | delivered  |

A `to` without a trailing digit counts as 4. Default e-mail rules, by the local part of `to`
(case-insensitive prefix, first match wins): `bounce*` email_bounced_hard (EmailSent, then
EmailBounced HARD 5.1.1; truth bounced), `notsent*` email_not_sent_held (EmailNotSent statusCode "2"
Held; truth not_sent), `silent*` email_sent_ens_lost (no ENS event; truth sent), anything else
email_sent (EmailSent; truth sent).

Both tables are knobs (`sms_outcomes`, `email_outcomes`, naming presets from `PRESETS`), and
`outcome_rule` (a callable `(channel, to) -> Outcome | preset name`) overrides them entirely.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """The fate of one send once it leaves the queue."""

    sent: bool = True
    not_sent_code: int = 0
    not_sent_message: str = ""
    not_sent_reason: str = ""
    transients: tuple[tuple[str, str], ...] = ()
    final: str | None = None
    final_code: str = ""
    final_message: str = ""
    transient_after_final: tuple[str, str] | None = None
    ens_lost: bool = False


PRESETS: dict[str, Outcome] = {
    "delivered_after_transient": Outcome(transients=(("3002", "AcceptedByCarrier"),),
                                         final="delivered", final_code="4000", final_message="Delivered"),
    "delivered_after_enroute": Outcome(transients=(("3000", "Enroute"),),
                                       final="delivered", final_code="4000", final_message="Delivered"),
    "delivered_after_two_transients": Outcome(transients=(("3000", "Enroute"), ("3002", "AcceptedByCarrier")),
                                              final="delivered", final_code="4000", final_message="Delivered"),
    "delivered": Outcome(final="delivered", final_code="4000", final_message="Delivered"),
    "bounced_expired": Outcome(final="bounced", final_code="4501", final_message="Expired"),
    "not_sent_47": Outcome(sent=False, not_sent_code=47, not_sent_message="MobileAddressNotFound",
                           not_sent_reason="Mobile Address not found"),
    "sent_no_final": Outcome(),
    "delivered_ens_lost": Outcome(final="delivered", final_code="4000", final_message="Delivered", ens_lost=True),
    "delivered_transient_late": Outcome(final="delivered", final_code="4000", final_message="Delivered",
                                        transient_after_final=("3001", "SentToCarrier")),
    "email_sent": Outcome(),
    "email_bounced_hard": Outcome(final="bounced", final_code="HARD", final_message="550 5.1.1 recipient address rejected"),
    "email_not_sent_held": Outcome(sent=False, not_sent_code=2, not_sent_message="Held",
                                   not_sent_reason="Subscriber status is held"),
    "email_sent_ens_lost": Outcome(ens_lost=True),
}

DEFAULT_SMS_OUTCOMES: dict[str, str] = {
    "0": "delivered_after_transient",
    "1": "delivered_after_enroute",
    "2": "delivered_after_two_transients",
    "3": "delivered_after_two_transients",
    "4": "delivered",
    "5": "bounced_expired",
    "6": "not_sent_47",
    "7": "sent_no_final",
    "8": "delivered_ens_lost",
    "9": "delivered_transient_late",
}

DEFAULT_EMAIL_OUTCOMES: list[tuple[str, str]] = [
    ("bounce", "email_bounced_hard"),
    ("notsent", "email_not_sent_held"),
    ("silent", "email_sent_ens_lost"),
]


def resolve(outcome: "Outcome | str") -> Outcome:
    return outcome if isinstance(outcome, Outcome) else PRESETS[outcome]


def choose(knobs, channel: str, to: str) -> Outcome:
    if knobs.outcome_rule is not None:
        return resolve(knobs.outcome_rule(channel, to))
    if channel == "sms":
        digit = to[-1:] if to[-1:].isdigit() else "4"
        return resolve(knobs.sms_outcomes.get(digit, "delivered"))
    local_part = to.split("@", 1)[0].lower()
    for prefix, preset in knobs.email_outcomes:
        if local_part.startswith(prefix):
            return resolve(preset)
    return resolve("email_sent")
