"""Groups: signed membership operations, sender chains and the group envelope (sans-IO)."""
