"""Connects to each HOST:PORT argument, then blocks in recv on the first connection."""

import socket
import sys


def query(addresses: list[str]) -> bytes:
    connections = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        connections.append(socket.create_connection((host.strip("[]"), int(port))))
    print("ready", flush=True)
    return connections[0].recv(1024)  # BLOCK


query(sys.argv[1:])
