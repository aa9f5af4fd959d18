"""The jqueue daemons: service trees, logging, signals and systemd integration.

``jqueue.daemon.masterd`` is jq-masterd, the queue daemon; ``jqueue.daemon.common`` holds
what every daemon shares.
"""
