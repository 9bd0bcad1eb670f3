"""``node.credentials``: a wallet, an issuer registry and status lists over gossip."""
