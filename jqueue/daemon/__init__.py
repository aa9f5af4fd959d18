"""The jqueue daemons: service trees, options, logging, signals and systemd integration.

``masterd`` is jq-masterd (the queue, the LUXI server and, in a cluster, the
``clustermaster``); ``noded`` is jq-noded (node RPC, the replica, votes); ``config`` is the
one table of options that serves their configuration files, flags and man pages;
``common`` holds what every daemon shares.

Programs sit at the top: this package may import every other one, except the CLI.
"""
