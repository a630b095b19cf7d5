"""ENS event payloads, shaped as sfmc-api.md §5.2–5.5 shows them (ENS spelling `Sms…`)."""

CATEGORY = "TransactionalSendEvents."

SMS_TYPES = {"Sent": "SmsSent", "NotSent": "SmsNotSent", "Transient": "SmsTransient",
             "Delivered": "SmsDelivered", "Bounced": "SmsBounced"}
EMAIL_TYPES = {"Sent": "EmailSent", "NotSent": "EmailNotSent", "Bounced": "EmailBounced"}


def transactional_event(send, kind: str, at_ms: int, code: str = "", message: str = "", reason: str = "",
                        mid=7000001, eid=7000000) -> dict | None:
    """The event ENS emits for one transition, or None when the channel has no such event type
    (e-mail has no Transient or Delivered)."""
    if kind not in (SMS_TYPES if send.channel == "sms" else EMAIL_TYPES):
        return None
    if send.channel == "sms":
        return _sms_event(send, kind, at_ms, code, message, reason, mid, eid)
    return _email_event(send, kind, at_ms, code, message, reason, mid, eid)


def _sms_event(send, kind, at_ms, code, message, reason, mid, eid) -> dict:
    ids = send.ids
    event = {
        "eventCategoryType": CATEGORY + SMS_TYPES[kind],
        "timestampUTC": at_ms,
        "compositeId": f"api.{ids['tsid']}.{send.definition_id}.{ids['batchId']}.{send.to}.0",
    }
    info = {"to": send.to, "subscriberKey": send.contact_key, "messageKey": send.message_key}
    if kind in ("Transient", "Delivered", "Bounced"):
        event["composite"] = {"Tsid": f"api.{ids['tsid']}", "jobId": send.definition_id,
                              "batchId": ids["batchId"], "mobileNumber": send.to, "subscriberId": "0"}
        info.update({"ordinal": "0", "statusCode": code, "statusMessage": message,
                     "fromAddress": "55512", "countryCode": "US"})
    event["definitionKey"] = send.definition_key
    if kind == "NotSent":
        event["definitionId"] = send.definition_id
        info.update({"statusCode": code, "reason": reason})
    event.update({"mid": mid, "eid": eid, "info": info})
    return event


def _email_event(send, kind, at_ms, code, message, reason, mid, eid) -> dict:
    ids = send.ids
    sent = kind != "NotSent"
    batch_id, subscriber_id = (ids["batchId"], ids["subscriberId"]) if sent else ("0", "0")
    composite = {"jobId": ids["jobId"], "batchId": batch_id, "listId": ids["listId"], "subscriberId": subscriber_id}
    if sent:
        composite["emailId"] = ids["emailId"]
    event = {
        "eventCategoryType": CATEGORY + EMAIL_TYPES[kind],
        "timestampUTC": at_ms,
        "compositeId": f"{send.definition_id}.{ids['jobId']}.{ids['listId']}.{batch_id}.{subscriber_id}",
        "composite": composite,
        "definitionKey": send.definition_key,
        "definitionId": send.definition_id,
        "mid": mid,
        "eid": eid,
    }
    info = {"to": send.to, "subscriberKey": send.contact_key, "messageKey": send.message_key}
    if kind == "Sent":
        event["sendClassificationType"] = "Operational"
        info.update({"status": "Sent", "renderedSubject": f"Your message {send.message_key}"})
    elif kind == "NotSent":
        info.update({"reason": reason, "statusCode": code, "statusMessage": message})
    elif kind == "Bounced":
        info.update({"bounceCode": code, "bounceMessage": message, "smtpReason": "5.1.1"})
    event["info"] = info
    return event


def unsubscribed_event(at_ms: int, mid, eid) -> dict:
    """An engagement event from a family the callback never subscribed to (a fault ENS can show)."""
    return {
        "eventCategoryType": "EngagementEvents.EmailOpen",
        "timestampUTC": at_ms,
        "compositeId": "3100200.55001.7001.900000101",
        "composite": {"jobId": "3100200", "batchId": "7001", "listId": "55001", "subscriberId": "900000101"},
        "definitionKey": "NA",
        "definitionId": "NA",
        "channel": "email",
        "mid": mid,
        "eid": eid,
        "info": {"ipAddress": "198.51.100.7", "userAgent": "Mozilla/5.0", "location": {}},
    }
