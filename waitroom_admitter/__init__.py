"""The admitter: admits users from each event's queue to checkout and relays the outbox."""
