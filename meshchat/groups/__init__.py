"""Groups: signed membership operations merged the same way by every member, and sender chains."""
