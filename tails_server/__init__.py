"""tails-server: publishes and serves AnonCreds / Indy revocation tails files."""

__version__ = "0.1.0"
