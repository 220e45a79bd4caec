"""Notifications: the events an on-call engineer must hear about, POSTed to the receivers of
DEPLOYER_NOTIFY, at least once, from a durable outbox in Redis.

    the script that writes an event  --(same script, Lua prelude `enqueue_notification`)-->
      outbox zset + event hash (fields, plan counts and stop reason)
    every worker's notifier (a duty of tasks/worker.py's maintenance loop, never a stage):
      notify_claim.lua  fan the outbox out to each receiver's queue; claim what is due
      one thread per receiver: POST, bounded (deadline, answer cap), Idempotency-Key
      notify_settle.lua delivered -> gone; failed -> due again after a backoff (events
      NOTIFICATION_FAILED / _DROPPED, counters deployer_notifications_total)

`events` names the events; `message` builds the JSON and Slack bodies; `outbox` wraps the
two scripts; `sender` is the notifier.
"""
