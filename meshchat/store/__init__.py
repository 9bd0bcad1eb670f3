"""Sans-IO store-and-forward: outbox, receipts, mailboxes, seen window, sync; storage backends."""
