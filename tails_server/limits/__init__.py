"""Limits that keep a public server answering: connections, file descriptors, upload slots, request rates."""

from .clients import ClientAddress, client_key, parse_networks
from .connections import Connections
from .fds import QuietAcceptErrors, connection_budget, raise_fd_limit, reserve

__all__ = ["ClientAddress", "Connections", "QuietAcceptErrors", "client_key", "connection_budget", "parse_networks", "raise_fd_limit", "reserve"]
