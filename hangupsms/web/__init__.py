"""The HTTP side of the daemon: Twilio callbacks and replies, tracked links, health, metrics."""
