"""Recovery: Kafka holds the truth when Redis loses it (docs/reliability.md).

- ``watermark``: what the relay tells Kafka about each event with every batch (the last outbox
  record relayed, the highest ticket joined and admitted, the config), and the rule that says
  whether Redis went back in time.
- ``reader``: reading topics from the start to their end, with no consumer group.
- ``history``: every session of an event as the topics tell it.
- ``plan``: the Redis records, counters and holes that history means (pure).
- ``restore``: writing a plan into Redis through the ``restore_*`` scripts, and the whole
  recovery of a set of events.
"""
